"""Data-parallel training for real: `train.processes: 2` runs the stage under torchrun (gloo, two CPU processes).

Two processes on shards of each global batch must train the same weights as one process on the whole batch (to
float tolerance: the gradient is summed in another order), give one MLflow run, and resume after a rank is killed.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tests.conftest import ROOT, write_params

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


def _env(tmp_path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    env.pop("DVC_ROOT", None)
    return env


def _study(tmp_path: Path, raw: dict, name: str, processes: int, env: dict, evaluator: Path | None = None) -> Path:
    """A working directory with prepared data and an evaluator (copied from `evaluator` when given)."""
    d = tmp_path / name
    d.mkdir()
    raw = copy.deepcopy(raw)
    raw["train"]["processes"] = processes
    write_params(d / "params.yaml", raw)
    stages = [["prepare"]] + ([] if evaluator else [["evaluator"]])
    for args in stages:
        subprocess.run([sys.executable, "-m", "stages", *args, "--tracking", "none"], cwd=d, env=env, check=True,
                       capture_output=True)
    if evaluator:
        (d / "models").mkdir(exist_ok=True)
        (d / "models" / "evaluator.pt").write_bytes(evaluator.read_bytes())
    return d


def _train(d: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages", *args], cwd=d, env=env, capture_output=True, text=True,
                          timeout=600)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _assert_same_weights(a: Path, b: Path, atol: float = 1e-5) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k].double(), wb[k].double(), rtol=1e-4, atol=atol), (k, float((wa[k] - wb[k]).abs().max()))


def test_two_processes_train_the_weights_of_one(tmp_path, tiny_raw):
    """An autoencoder (2 epochs, 24 steps) and a GAN without batch norm (the book's fully connected GAN, 4 steps:
    both networks, the EMA generator, the logged losses): the same numbers whether one process or two share each
    batch."""
    env = _env(tmp_path)
    raw = copy.deepcopy(tiny_raw)
    # a GAN amplifies float differences (RMSprop divides by tiny second moments early on): compare after 4 steps
    raw["budget"]["images"] = 4 * raw["gans"]["gan"]["batch_size"]
    one = _study(tmp_path, raw, "one", 1, env)
    two = _study(tmp_path, raw, "two", 2, env, evaluator=one / "models" / "evaluator.pt")
    # RMSprop's first steps move each weight by about 10 x lr whatever the gradient's size, so a gradient that is
    # float noise (summed in another order over two shards) moves its weight by up to that: the GAN's tolerance is
    # a fifth of it (1e-3 x 10 / 5), far below what a wrong shard, latent or average would do (whole steps).
    lr = raw["gans"]["gan"]["lr_g"]
    for args, model, atol in ((["train-ae", "stacked"], "stacked-42", 1e-5), (["train-gan", "gan"], "gan-42", 2 * lr)):
        for d in (one, two):
            result = _train(d, env, *args, "--tracking", "mlflow" if d is two else "none")
            assert result.returncode == 0, result.stderr
        _assert_same_weights(one / "models" / f"{model}.pt", two / "models" / f"{model}.pt", atol)
        h1 = (one / "runs" / model / "train" / "history.json").read_text()
        h2 = (two / "runs" / model / "train" / "history.json").read_text()
        import json

        for r1, r2 in zip(json.loads(h1), json.loads(h2)):  # logged losses: the global batch's mean
            assert r1.keys() == r2.keys()
            for k in r1:
                assert r1[k] == pytest.approx(r2[k], rel=1e-3, abs=1e-6), (model, k)
    assert "in 2 processes" in result.stdout

    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["ae-gan-study"], output_format="list")
    stages = sorted(r.data.tags["dvc.stage"] for r in runs)
    assert stages == ["train_ae@stacked-42", "train_gan@gan-42"]  # one run per stage, not one per process
    assert all(r.info.status == "FINISHED" for r in runs)
    assert not list((two / "checkpoints").glob("*.ckpt"))


def _worker_pids(parent_cwd: Path) -> dict[int, int]:
    """{local rank: pid} of the torchrun workers running in `parent_cwd`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) != parent_cwd:
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(b"LOCAL_RANK="):
                found[int(item.split(b"=", 1)[1])] = int(entry.name)
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
def test_a_killed_rank_fails_the_stage_in_one_line_and_a_rerun_resumes(tmp_path, tiny_raw):
    raw = copy.deepcopy(tiny_raw)
    raw["budget"]["images"] = 12 * 400  # long enough to be killed after a checkpoint
    env = _env(tmp_path)
    clean = _study(tmp_path, raw, "clean", 2, env)
    killed = _study(tmp_path, raw, "killed", 2, env, evaluator=clean / "models" / "evaluator.pt")
    assert _train(clean, env, "train-gan", "gan", "--tracking", "none").returncode == 0

    cmd = [sys.executable, "-m", "stages", "train-gan", "gan", "--tracking", "none"]
    proc = subprocess.Popen(cmd, cwd=killed, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = killed / "checkpoints" / "gan-42.ckpt"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    workers = _worker_pids(killed.resolve())
    assert 1 in workers, ("no worker of rank 1 found", workers, proc.poll())
    os.kill(workers[1], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "a training process failed under torchrun" in lines[0], err
    assert "rerun to resume" in lines[0] and "Traceback" not in err
    assert not (killed / "models" / "gan-42.pt").exists() and ckpt.exists()

    again = _train(killed, env, "train-gan", "gan", "--tracking", "none")
    assert again.returncode == 0, again.stderr
    assert "resuming gan" in again.stderr
    # same processes, same shards, same order: resuming gives the uninterrupted run's weights
    _assert_same_weights(clean / "models" / "gan-42.pt", killed / "models" / "gan-42.pt", atol=1e-6)


def test_sync_batchnorm_on_cpu_is_refused_in_one_line(tmp_path, tiny_raw):
    raw = copy.deepcopy(tiny_raw)
    raw["train"]["sync_batchnorm"] = True
    env = _env(tmp_path)
    d = _study(tmp_path, raw, "sync", 2, env)
    result = _train(d, env, "train-gan", "dcgan", "--tracking", "none")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "train.sync_batchnorm: SyncBatchNorm needs CUDA devices" in lines[0], result.stderr
