"""Data-parallel training over torch.distributed, as NVlabs' stylegan2-ada-pytorch does it: every process holds the
whole model, trains on its shard of each global batch, and averages the gradients by hand before each optimizer
step (one all-reduce of all of a network's gradients). No DistributedDataParallel wrapper: its hooks do not fit the
double backward of WGAN-GP's and R1's penalties, and averaging by hand works the same for every model.

What a user can rely on (`train.processes` = N > 1, launched by torchrun; see stages/commands.py):
- the global batch is the model's `batch_size`, split into N equal shards of the same seeded permutation; every
  process draws the global batch's latents and noise from the same RNG stream and keeps its shard (`local`), so N
  processes and one process see the same images and latents at every step;
- gradients are averaged over the processes (both networks of a GAN, penalties included), so the weights stay
  identical on every rank, and so do the EMA generator and schedules (ProGAN's alpha) that follow them;
- batch norm is per process unless `train.sync_batchnorm` (SyncBatchNorm: statistics over the global batch);
- only rank 0 writes checkpoints, grids, files and MLflow records; every rank resumes from the same checkpoint.
Noise a model draws inside its own loss (the denoising autoencoders' corruption, the VAE's sampling) is drawn per
shard from the common stream: the same distribution as one process, not the same numbers.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pipeline import StudyError


def world() -> tuple[int, int]:
    """(rank, number of processes); (0, 1) outside distributed training."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def launched() -> bool:
    """True inside a process started by torchrun (its environment names the rank and the world)."""
    return "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def launched_rank() -> int:
    """This process's rank as torchrun announced it (0 outside torchrun), known before the group is joined."""
    return int(os.environ.get("RANK", "0")) if launched() else 0


def start(device: torch.device) -> None:
    """Join the process group torchrun set up: gloo on CPU, nccl on CUDA (one GPU per local rank)."""
    if not launched() or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def stop() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_batch(name: str, batch_size: int) -> None:
    _, size = world()
    if batch_size % size:
        raise StudyError(f"{name}: batch_size {batch_size} does not split into train.processes = {size} equal shards")


def local(t: Tensor) -> Tensor:
    """This process's shard of a global batch (the whole batch with one process)."""
    rank, size = world()
    if size == 1:
        return t
    n = len(t) // size
    return t[rank * n:(rank + 1) * n]


def global_count(n_local: int) -> int:
    """The global batch size of a local shard of n_local."""
    return n_local * world()[1]


def average_gradients(module: nn.Module) -> None:
    """Each gradient of `module` replaced by its mean over the processes: one all-reduce of them all."""
    _, size = world()
    if size == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def average_values(values: dict) -> dict:
    """A step's logged values (floats or 0-d tensors) averaged over the processes (the global batch's mean for a
    per-sample mean), so that every rank logs, and judges divergence on, the same numbers. Tensors stay on their
    device (no host sync)."""
    _, size = world()
    if size == 1 or not values:
        return values
    keys = sorted(values)
    device = next((v.device for v in values.values() if torch.is_tensor(v)), torch.device("cpu"))
    t = torch.stack([torch.as_tensor(values[k], dtype=torch.float64, device=device).reshape(()) for k in keys])
    dist.all_reduce(t)
    return dict(zip(keys, (t / size).unbind()))


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """Batch norm layers as SyncBatchNorm (statistics of the global batch) when training in several processes."""
    if world()[1] == 1:
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)
