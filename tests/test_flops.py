"""A step's FLOPs and the machine's peak: counted right, per phase, and without touching the training."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.train.flops import count_flops, matmul_peak, throughput
from pipeline.train.loop import Loop
from pipeline.train.run import train_model
from pipeline.train.session import TrainPaths


def _timing(paths: TrainPaths) -> dict:
    return json.loads((paths.run_dir / "timing.json").read_text())


def test_a_linear_autoencoder_counts_as_by_hand(tiny_cfg, tiny_data, tmp_path):
    """784 -> k -> 784 without activations: forward 2 multiply-adds of 784*k per image (4 * 784k FLOPs); backward
    the decoder's input and weight gradients and the encoder's weight gradient (the images need none): 6 * 784k."""
    paths = TrainPaths.for_model("linear", tmp_path)
    assert train_model("linear", tiny_cfg, tiny_data, paths)
    k, d = tiny_cfg.model("linear").code_size, 28 * 28
    timing = _timing(paths)
    assert timing["flops_per_image"] == 10 * d * k
    assert timing["peak_gflops"] > 0 and 0 < timing["peak_share"] < 1
    assert timing["machine"].endswith(f", {torch.get_num_threads()} threads")  # what the times were measured on
    assert timing["gflops"] == pytest.approx(10 * d * k * timing["images_per_second"] / 1e9, rel=1e-2)


def test_an_lstm_counts_its_gate_multiplies():
    """CPU LSTMs run as one fused operator per layer: 4 gates x (input + hidden) multiply-adds a step and image,
    forward; the backward twice that."""
    lstm = torch.nn.LSTM(28, 100, batch_first=True)
    x = torch.randn(4, 28, 28)  # 4 sequences of 28 steps
    forward = 2 * 4 * 28 * 4 * 100 * (28 + 100)
    assert count_flops(lambda: lstm(x)) == forward
    assert count_flops(lambda: lstm(x)[0].sum().backward()) == 3 * forward


def test_double_backward_is_counted():
    """A gradient penalty's graph (autograd.grad with create_graph) goes through the counter."""
    w = torch.randn(8, 8, requires_grad=True)

    def penalty_step():
        x = torch.randn(4, 8, requires_grad=True)
        grad, = torch.autograd.grad((x @ w).sum(), x, create_graph=True)
        grad.pow(2).sum().backward()

    plain = count_flops(lambda: (torch.randn(4, 8) @ w).sum().backward())
    assert count_flops(penalty_step) > plain > 0


def test_growing_counts_each_phase_and_weights_it_by_its_steps(tiny_cfg, tiny_data, tmp_path):
    paths = TrainPaths.for_model("progan", tmp_path)
    assert train_model("progan", tiny_cfg, tiny_data, paths)
    timing = _timing(paths)
    by_phase = timing["flops_by_phase"]
    assert {"4px", "32px"} <= {p.split()[0] for p in by_phase}  # every resolution of the growth
    low, high = min(by_phase.values()), max(by_phase.values())
    assert low < timing["flops_per_image"] < high  # a mean over phases, not the first step's count


@pytest.mark.parametrize("name", ["progan", "denoising_gaussian", "vae"])
def test_counting_leaves_the_training_unchanged(name, tiny_cfg, tiny_data, tmp_path, monkeypatch):
    """The counted step runs on a snapshot that is put back: the same model bytes as a run that counts nothing
    (a penalty's step and a resolution change, noise drawn inside the loss, sampled latents)."""
    counted = TrainPaths.for_model(name, tmp_path / "counted")
    assert train_model(name, tiny_cfg, tiny_data, counted)
    monkeypatch.setattr(Loop, "_count_flops", lambda self, step, x, y: 0.0)
    plain = TrainPaths.for_model(name, tmp_path / "plain")
    assert train_model(name, tiny_cfg, tiny_data, plain)
    assert counted.model.read_bytes() == plain.model.read_bytes()
    assert _timing(counted)["flops_per_image"] > 0 == _timing(plain)["flops_per_image"]


def test_peak_and_share():
    assert matmul_peak(size=256, repeats=2) > 0
    t = throughput(1e9, 50.0, 100.0, processes=2)  # 50 GFLOP/s against two processes of 100
    assert t["gflops"] == 50.0 and t["peak_share"] == 0.25
