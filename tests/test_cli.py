"""The Typer app: each stage command end to end on tiny params, bad input, MLflow records, kill + resume."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from stages import run
from tests.conftest import ROOT, write_params


@dataclass
class Result:
    exit_code: int
    output: str


@pytest.fixture
def invoke(capsys):
    """Run `python -m stages ARGS` in-process (the same entry point), capturing what it prints."""

    def call(*args: str) -> Result:
        code = run(list(args))
        out = capsys.readouterr()
        return Result(code, out.out + out.err)

    return call


def assert_one_line_error(result, expected: str):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert expected in lines[0] and "Traceback" not in result.output


@pytest.fixture
def workdir(tmp_path, monkeypatch, tiny_raw):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    write_params(tmp_path / "params.yaml", tiny_raw)
    return tmp_path


@pytest.mark.parametrize(
    "edit, args, expected",
    [
        (lambda r: r["data"].update(dataset="imagenet"), ["prepare"], "data.dataset: Input should be"),
        (lambda r: r["data"].update(test_size=5), ["prepare"], "data.test_size: Input should be greater than or equal to 10"),
        (lambda r: r["autoencoders"]["vae"].update(beta="lots"), ["prepare"], "autoencoders.vae.beta: Input should be a valid number"),
        (lambda r: r["gans"]["dcgan"].update(wgan=True), ["prepare"], "gans.dcgan.wgan: unknown key"),
        (lambda r: None, ["train-ae", "nosuchmodel"], "unknown model 'nosuchmodel'; registered models: pca, linear, stacked"),
        (lambda r: None, ["train-ae", "dcgan"], "'dcgan' is a gan: train it with `train-gan dcgan`"),
        (lambda r: r["autoencoders"].pop("vae"), ["train-ae", "vae"], "model 'vae' is not in params.yaml"),
        (lambda r: None, ["evaluate", "stacked", "--tracking", "wandb"], "'wandb' is not one of 'mlflow', 'none'"),
        (lambda r: None, ["train-ae"], "Missing argument 'name'"),
        (lambda r: None, ["fit"], "No such command 'fit'"),
        (lambda r: None, ["train-ae", "stacked"], "no prepared dataset here (run the 'prepare' stage first)"),
        (lambda r: None, ["train-gan", "dcgan", "--seed", "7"], "seed 7 is not in params.yaml's seeds [42]"),
        (lambda r: r.update(seeds=[42, 42]), ["prepare"], "seeds: each seed once"),
        (lambda r: r.update(seeds=[]), ["prepare"], "seeds: List should have at least 1 item"),
        (lambda r: r["budget"].update(images=0), ["prepare"], "budget.images: Input should be greater than or equal to 1"),
        (lambda r: r["gans"]["stylegan"].update(coarse_layers=99), ["train-gan", "stylegan"],
         "gans.stylegan.coarse_layers: 1 to 7 (the synthesis network has 8 style layers); got 99"),
        (lambda r: r["autoencoders"]["conv"].update(channels=[0, 32, 64]), ["train-ae", "conv"],
         "autoencoders.conv.channels.0: Input should be greater than or equal to 1 (got 0)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(workdir, tiny_raw, invoke, edit, args, expected):
    raw = copy.deepcopy(tiny_raw)
    edit(raw)
    write_params(workdir / "params.yaml", raw)
    result = invoke(*args)
    assert_one_line_error(result, expected)
    assert not (workdir / "data" / "prepared").exists() and not (workdir / "models").exists()


def test_missing_params_file(workdir, invoke):
    assert_one_line_error(invoke("prepare", "--params", "missing.yaml"), "missing.yaml: no such file")


def _chain(invoke, tracking: str) -> None:
    for args in (["prepare"], ["evaluator"], ["train-ae", "vae"], ["train-gan", "dcgan"],
                 ["evaluate", "vae"], ["evaluate", "dcgan"]):
        result = invoke(*args, "--tracking", tracking)
        assert result.exit_code == 0, result.output


def test_stages_are_deterministic_and_tracked_in_mlflow(tmp_path, monkeypatch, tiny_raw, invoke):
    """Same seed on CPU -> byte-identical metrics and models; MLflow records runs without changing results."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    outputs = {}
    for name, tracking in (("a", "mlflow"), ("b", "none")):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        write_params(tmp_path / name / "params.yaml", tiny_raw)
        _chain(invoke, tracking)
        outputs[name] = {p.relative_to(tmp_path / name): p.read_bytes()
                         for p in sorted((tmp_path / name).glob("*/*.*")) if p.suffix in (".json", ".pt")}
    assert outputs["a"].keys() == outputs["b"].keys()
    assert {str(p) for p in outputs["a"]} >= {"metrics/vae-42.json", "metrics/dcgan-42.json", "metrics/evaluator.json",
                                              "models/vae-42.pt", "models/dcgan-42.pt"}
    assert outputs["a"] == outputs["b"]

    vae = json.loads(outputs["a"][Path("metrics/vae-42.json")])
    assert vae["n_generated"] == 100 and 0 <= vae["precision"] <= 1 and vae["test_mse"] < 0.2

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["ae-gan-study"], output_format="list")
    by_stage = {r.data.tags["dvc.stage"]: r for r in runs}
    assert set(by_stage) == {"prepare", "evaluator", "train_ae@vae-42", "train_gan@dcgan-42", "evaluate_ae@vae-42",
                             "evaluate_gan@dcgan-42"}
    train = by_stage["train_ae@vae-42"]
    assert train.info.status == "FINISHED" and train.data.tags["git.commit"] and train.data.tags["model"] == "vae"
    assert train.data.params["config.code_size"] == "10" and train.data.params["seed"] == "42"
    client = mlflow.MlflowClient()
    kl = client.get_metric_history(train.info.run_id, "train_kl")
    assert [m.step for m in kl] == [1, 2, 3]  # per-epoch terms of the ELBO (800 images at batch 32: 3 epochs)
    fid = client.get_metric_history(train.info.run_id, "curve_fid")  # the curve, at step = images seen
    assert [m.step for m in fid] == [384, 800]
    assert train.data.tags["seed"] == "42"
    assert by_stage["evaluate_gan@dcgan-42"].data.metrics["fid"] == json.loads(outputs["a"][Path("metrics/dcgan-42.json")])["fid"]
    assert (tmp_path / "a" / "mlartifacts").is_dir()  # artifacts anchored beside the database


def kill_after_checkpoint(cmd: list[str], cwd: Path, env: dict, ckpt: Path) -> None:
    """Start a real stage process and SIGKILL it as soon as its first checkpoint exists."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"


def test_killed_training_resumes_to_the_same_model(tmp_path, tiny_raw):
    """SIGKILL a real training process after a checkpoint, start it again: same model bytes as a clean run."""
    raw = copy.deepcopy(tiny_raw)
    raw["budget"]["images"] = 12 * 400  # 12 epochs of the tiny data
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DVC_ROOT", None)
    cmd = [sys.executable, "-m", "stages", "train-gan", "dcgan", "--tracking", "none"]
    for name in ("clean", "killed"):
        (tmp_path / name).mkdir()
        write_params(tmp_path / name / "params.yaml", raw)
        subprocess.run([sys.executable, "-m", "stages", "prepare", "--tracking", "none"], cwd=tmp_path / name, env=env, check=True,
                       capture_output=True)
    # the GAN loop measures its curve with the evaluator: train it once, give both the same one
    subprocess.run([sys.executable, "-m", "stages", "evaluator", "--tracking", "none"], cwd=tmp_path / "clean", env=env,
                   check=True, capture_output=True)
    (tmp_path / "killed" / "models").mkdir()
    (tmp_path / "killed" / "models" / "evaluator.pt").write_bytes((tmp_path / "clean" / "models" / "evaluator.pt").read_bytes())
    subprocess.run(cmd, cwd=tmp_path / "clean", env=env, check=True, capture_output=True)

    killed = tmp_path / "killed"
    ckpt = killed / "checkpoints" / "dcgan-42.ckpt"
    kill_after_checkpoint(cmd, killed, env, ckpt)
    assert not (killed / "models" / "dcgan-42.pt").exists()
    again = subprocess.run(cmd, cwd=killed, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "resuming dcgan" in again.stderr
    assert (killed / "models" / "dcgan-42.pt").read_bytes() == (tmp_path / "clean" / "models" / "dcgan-42.pt").read_bytes()
    assert not ckpt.exists()


def test_report_stage_writes_the_same_bytes_twice(tmp_path, monkeypatch, tiny_raw, invoke):
    monkeypatch.chdir(tmp_path)
    raw = copy.deepcopy(tiny_raw)
    raw["autoencoders"] = {"pca": raw["autoencoders"]["pca"]}
    raw["gans"] = {"dcgan": raw["gans"]["dcgan"]}
    raw["diffusion"] = {}
    write_params(tmp_path / "params.yaml", raw)
    for args in (["prepare", "--tracking", "none"], ["evaluator", "--tracking", "none"], ["train-ae", "pca", "--tracking", "none"],
                 ["train-gan", "dcgan", "--tracking", "none"], ["evaluate", "pca", "--tracking", "none"]):
        assert invoke(*args).exit_code == 0
    # the GAN was trained but not evaluated: the report names what is missing
    assert_one_line_error(invoke("report", "--tracking", "none"), "metrics/dcgan-42.json: missing")
    assert not (tmp_path / "reports").exists()
    assert invoke("evaluate", "dcgan", "--tracking", "none").exit_code == 0
    assert invoke("report", "--tracking", "none").exit_code == 0
    first = {p.name: p.read_bytes() for p in (tmp_path / "reports").rglob("*") if p.is_file()}
    assert invoke("report", "--tracking", "none").exit_code == 0
    second = {p.name: p.read_bytes() for p in (tmp_path / "reports").rglob("*") if p.is_file()}
    assert first == second
    text = first["README.md"].decode()
    assert "| pca |" in text and "| dcgan |" in text and "real: train images vs test split (floor)" in text
    assert {"curves_gans.png", "pca_reconstructions.png", "dcgan_samples.png", "budget_curves.png"} <= set(first)
    assert "## Findings" in text and "Same training budget: every generative model saw 800 training images" in text
