"""A run that diverges stops (or, finite, is named); a run killed from outside ends KILLED; every stage says where
its time went; MLflow opens on the runs table. Real stage commands on the tiny profile, real MLflow stores."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
from tests.conftest import ROOT, write_params
from tests.test_cli import invoke, kill_after_checkpoint, workdir  # noqa: F401  (fixtures)


@pytest.fixture(autouse=True)
def own_store(tmp_path, monkeypatch):
    """Each test's own SQLite store (mlflow.set_tracking_uri also sets the variable: no leaking between tests)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


def _mlflow_runs(root):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["ae-gan-study"], output_format="list")


def test_a_non_finite_loss_stops_training_with_one_line_and_no_model(workdir, tiny_raw, invoke):  # noqa: F811
    raw = copy.deepcopy(tiny_raw)
    raw["autoencoders"]["vae"]["lr"] = 1.0  # the KL term's exp(log-variance) overflows within a few steps
    write_params(workdir / "params.yaml", raw)
    assert invoke("prepare").exit_code == 0
    assert invoke("evaluator").exit_code == 0
    result = invoke("train-ae", "vae")
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    line = errors[0]
    assert "vae: training diverged at epoch 1, step" in line and "kl inf" in line and "learning rates: opt 1" in line
    assert not (workdir / "models" / "vae-42.pt").exists()  # nothing that looks like a result
    assert not (workdir / "runs" / "vae-42" / "train" / "history.json").exists()
    (train,) = [r for r in _mlflow_runs(workdir) if r.data.tags["dvc.stage"] == "train_ae@vae-42"]
    assert train.info.status == "FAILED"


def test_a_finite_blow_up_finishes_but_is_named(workdir, tiny_raw, invoke):  # noqa: F811
    raw = copy.deepcopy(tiny_raw)
    raw["gans"]["gan"].update(lr_g=1.0, lr_d=1.0)  # the example: losses of 1e9, every value finite
    write_params(workdir / "params.yaml", raw)
    for args in (["prepare"], ["evaluator"]):
        assert invoke(*args).exit_code == 0
    result = invoke("train-gan", "gan")
    assert result.exit_code == 0, result.output
    # which network's loss is named depends on float order (one thread or two): either blew up by orders of magnitude
    warning = [line for line in result.output.splitlines() if line.startswith("warning: gan (seed 42): train_")]
    assert len(warning) == 1 and "_loss ended at" in warning[0] and "blew up" in warning[0], result.output
    health = json.loads((workdir / "runs" / "gan-42" / "train" / "health.json").read_text())
    assert health["status"] == "blew_up"
    (train,) = [r for r in _mlflow_runs(workdir) if r.data.tags["dvc.stage"] == "train_gan@gan-42"]
    assert train.data.tags["health"] == "blew_up" and "blew up" in train.data.tags["mlflow.note.content"]


def test_a_healthy_run_is_ok_and_profiled(workdir, invoke):  # noqa: F811
    for args in (["prepare"], ["evaluator"], ["train-ae", "stacked"], ["train-gan", "dcgan"], ["evaluate", "dcgan"]):
        assert invoke(*args).exit_code == 0
    assert json.loads((workdir / "runs" / "stacked-42" / "train" / "health.json").read_text())["status"] == "ok"
    run = workdir / "runs" / "dcgan-42"  # 800 images: it may well cover few classes yet, and say so
    assert json.loads((run / "train" / "health.json").read_text())["status"] in ("ok", "collapsed")
    for profile, kinds in ((run / "train" / "profile.json", {"startup", "setup", "steps", "epoch_end", "curve",
                                                              "checkpoint", "tracking", "export", "other", "wall"}),
                           (run / "eval" / "profile.json", {"startup", "setup", "sampling", "metrics", "analysis",
                                                             "write", "tracking", "other", "wall"})):
        seconds = json.loads(profile.read_text())
        assert kinds <= seconds.keys(), (profile, seconds)
        assert all(v >= 0 for v in seconds.values())
        assert sum(v for k, v in seconds.items() if k != "wall") == pytest.approx(seconds["wall"], abs=0.05)
    runs = _mlflow_runs(workdir)
    import mlflow

    experiment = mlflow.get_experiment(runs[0].info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on its runs
    by_stage = {r.data.tags["dvc.stage"]: r for r in runs}
    assert "FID" in by_stage["evaluate_gan@dcgan-42"].data.tags["mlflow.note.content"]
    assert "dcgan" in by_stage["train_gan@dcgan-42"].data.tags["mlflow.note.content"]


def test_a_run_killed_from_outside_is_marked_killed_when_the_stage_next_starts(tmp_path, tiny_raw):
    raw = copy.deepcopy(tiny_raw)
    raw["budget"]["images"] = 12 * 400
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DVC_ROOT", None)
    write_params(tmp_path / "params.yaml", raw)
    for args in (["prepare"], ["evaluator"]):
        subprocess.run([sys.executable, "-m", "stages", *args], cwd=tmp_path, env=env, check=True, capture_output=True)
    cmd = [sys.executable, "-m", "stages", "train-gan", "dcgan"]
    ckpt = tmp_path / "checkpoints" / "dcgan-42.ckpt"
    kill_after_checkpoint(cmd, tmp_path, env, ckpt)
    ckpt.unlink()  # its checkpoint is gone: nothing will continue that run
    (dead,) = [r for r in _mlflow_runs(tmp_path) if r.data.tags["dvc.stage"] == "train_gan@dcgan-42"]
    assert dead.info.status == "RUNNING"  # what a killed process leaves behind
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    status = {r.info.run_id: r.info.status for r in _mlflow_runs(tmp_path)
              if r.data.tags["dvc.stage"] == "train_gan@dcgan-42"}
    assert status.pop(dead.info.run_id) == "KILLED" and list(status.values()) == ["FINISHED"]


def test_seeding_turns_on_deterministic_algorithms_without_importing_the_compiler():
    """Every stage seeds; torch's public switch would import torch._inductor and torch._dynamo (seconds of start-up
    for a compiler the study never uses)."""
    code = ("import sys, torch; from pipeline.train.common import seed_everything; seed_everything(0); "
            "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(), "
            "'torch._dynamo' in sys.modules, 'torch._inductor' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True", "False", "False"], out
