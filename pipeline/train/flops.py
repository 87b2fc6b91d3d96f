"""How close a training step runs to what the machine can do: FLOPs per training image against a measured peak.

- `count_flops(fn)`: the floating-point operations `fn` runs, counted by `torch.utils.flop_counter.FlopCounterMode`
  (matrix multiplies, convolutions and recurrent layers, forward and backward, double backward included; 2 per
  multiply-add, the convention of MFU figures; elementwise work is not counted).
- `matmul_peak(device)`: the FP32 rate a large square matrix multiply reaches in this process, at its current
  thread count (CPU) or on its GPU: the ceiling a step's GFLOP/s is a share of. Best of a few repeats.
- `machine(device)`: what ran the steps (the CPU's model name and thread count, or the GPU's name), recorded beside
  the times, which mean nothing without it.

The training loop counts one real step of each phase of the run (a ProGAN resolution, a lazy penalty's step) on a
snapshot of its state that it then restores, so the count neither changes the training nor is timed as a step.
"""

from __future__ import annotations

import math
import platform
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

PEAK_SIZE = 1536  # side of the square FP32 matrices timed for the peak (7.2 GFLOP a multiply)
PEAK_REPEATS = 8


class _WholeStep:
    """Stands in for FlopCounterMode's per-module tracker: every FLOP is charged to the total alone."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False


def _rnn_layer(input_shape, w_ih, w_hh, *args, **kwargs) -> int:
    """One recurrent layer over a sequence: each step multiplies the input by W_ih (gates x in) and the state by
    W_hh (gates x hidden), for every sequence and time step."""
    steps = math.prod(input_shape) // w_ih[1]  # time steps x batch
    return 2 * steps * w_ih[0] * (w_ih[1] + w_hh[1])


def _rnn_layer_backward(input_shape, w_ih, w_hh, *args, **kwargs) -> int:
    return 2 * _rnn_layer(input_shape, w_ih, w_hh)  # gradients of the inputs and state, and of the weights


# CPU LSTMs run as oneDNN's fused layer, which FlopCounterMode's own table does not list
RNN_FLOPS = {torch.ops.aten.mkldnn_rnn_layer: _rnn_layer, torch.ops.aten.mkldnn_rnn_layer_backward: _rnn_layer_backward}


class _TotalFlopCounter(FlopCounterMode):
    """FlopCounterMode without its module tracker: the backward hooks that tracker puts on every module make
    `torch.autograd.grad` fail inside a step (the double backward of the WGAN-GP and R1 penalties), and a step
    needs only the total. It also counts the fused recurrent layers of CPU LSTMs."""

    def __init__(self) -> None:
        super().__init__(display=False, custom_mapping=RNN_FLOPS)
        self.mod_tracker = _WholeStep()


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of `fn` (its return value is discarded)."""
    with _TotalFlopCounter() as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak(device: torch.device | str = "cpu", size: int = PEAK_SIZE, repeats: int = PEAK_REPEATS) -> float:
    """GFLOP/s of the best of `repeats` FP32 `size`x`size` matrix multiplies on `device` (after one warm-up)."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(0)  # its own stream: the training's random numbers are not touched
    a = torch.randn(size, size, generator=gen).to(device)
    b = torch.randn(size, size, generator=gen).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = float("inf")
    for i in range(repeats + 1):
        sync()
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync()
        if i:  # the first one warms caches and thread pools up
            best = min(best, time.perf_counter() - t0)
    return round(2 * size**3 / best / 1e9, 2)


def machine(device: torch.device | str = "cpu") -> str:
    """What ran the steps: the GPU's name, or the CPU's model name (from /proc/cpuinfo where there is one) and the
    thread count torch uses."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    info = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in (info.read_text().splitlines() if info.is_file() else [])
             if line.startswith("model name")]
    return f"{names[0] if names else platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def throughput(flops_per_image: float, images_per_second: float, peak_gflops: float, processes: int = 1) -> dict:
    """The steps' GFLOP/s and their share of the peak of `processes` processes like this one."""
    gflops = flops_per_image * images_per_second / 1e9
    return {"flops_per_image": round(flops_per_image), "gflops": round(gflops, 2), "peak_gflops": peak_gflops,
            "peak_share": round(gflops / (peak_gflops * processes), 4) if peak_gflops > 0 else 0.0}
