"""The GPU path: the same stage commands on CUDA (skipped, with the reason, where there is no GPU), and bf16 autocast.

On CUDA the loop reads its per-step values once per checkpoint interval instead of every step, draws latents on
the device, and joins nccl for several processes: each of those lines runs in a test here when a GPU is present.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from tests.conftest import write_params
from tests.test_cli import invoke, workdir  # noqa: F401  (fixtures)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="fewer than two CUDA devices on this machine")


def _finite_history(path) -> list[dict]:
    history = json.loads(path.read_text())
    assert history and all(isinstance(v, (int, float)) and v == v for row in history for v in row.values())
    return history


def test_bf16_autocast_trains_a_gan_and_an_autoencoder(workdir, tiny_raw, invoke):  # noqa: F811
    """`train.autocast: bf16` (here on the CPU, which has bfloat16 kernels too): finite losses, a model file."""
    raw = copy.deepcopy(tiny_raw)
    raw["train"]["autocast"] = "bf16"
    write_params(workdir / "params.yaml", raw)
    for args in (["prepare"], ["evaluator"], ["train-gan", "dcgan"], ["train-ae", "conv"], ["evaluate", "dcgan"]):
        result = invoke(*args, "--tracking", "none")
        assert result.exit_code == 0, result.output
    _finite_history(workdir / "runs" / "dcgan-42" / "train" / "history.json")
    _finite_history(workdir / "runs" / "conv-42" / "train" / "history.json")


@cuda
def test_the_stages_run_on_cuda(workdir, tiny_raw, invoke):  # noqa: F811
    raw = copy.deepcopy(tiny_raw)
    raw["device"] = "cuda"
    write_params(workdir / "params.yaml", raw)
    for args in (["prepare"], ["evaluator"], ["train-gan", "progan"], ["train-ae", "vae"], ["evaluate", "progan"]):
        result = invoke(*args, "--tracking", "none")
        assert result.exit_code == 0, result.output
    history = _finite_history(workdir / "runs" / "progan-42" / "train" / "history.json")
    assert len(history) == 2
    metrics = json.loads((workdir / "metrics" / "progan-42.json").read_text())
    assert metrics["fid"] > 0 and metrics["n_generated"] == 100


@cuda
def test_bf16_autocast_on_cuda(workdir, tiny_raw, invoke):  # noqa: F811
    raw = copy.deepcopy(tiny_raw)
    raw.update(device="cuda")
    raw["train"]["autocast"] = "bf16"
    write_params(workdir / "params.yaml", raw)
    for args in (["prepare"], ["evaluator"], ["train-gan", "stylegan"]):
        result = invoke(*args, "--tracking", "none")
        assert result.exit_code == 0, result.output
    _finite_history(workdir / "runs" / "stylegan-42" / "train" / "history.json")


@cuda
def test_a_non_finite_loss_on_cuda_stops_at_the_next_check(workdir, tiny_raw, invoke):  # noqa: F811
    raw = copy.deepcopy(tiny_raw)
    raw["device"] = "cuda"
    raw["autoencoders"]["vae"]["lr"] = 1.0
    write_params(workdir / "params.yaml", raw)
    for args in (["prepare"], ["evaluator"]):
        assert invoke(*args, "--tracking", "none").exit_code == 0
    result = invoke("train-ae", "vae", "--tracking", "none")
    assert result.exit_code == 2 and "training diverged" in result.output, result.output
    assert not (workdir / "models" / "vae-42.pt").exists()


@two_gpus
def test_two_gpus_with_nccl_and_sync_batchnorm(workdir, tiny_raw, invoke):  # noqa: F811
    raw = copy.deepcopy(tiny_raw)
    raw["device"] = "cuda"
    raw["train"].update(processes=2, sync_batchnorm=True)
    write_params(workdir / "params.yaml", raw)
    for args in (["prepare"], ["evaluator"], ["train-gan", "dcgan"]):
        result = invoke(*args, "--tracking", "none")
        assert result.exit_code == 0, result.output
    _finite_history(workdir / "runs" / "dcgan-42" / "train" / "history.json")
