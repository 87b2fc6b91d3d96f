"""A shared tracking server: `make server` starts a real `mlflow server` process (SQLite backend, artifacts served
through it) on a free loopback port; real stage processes log to it with only MLFLOW_TRACKING_URI set, and the run's
params, metrics, images and model come back through the client. The server is stopped at the end."""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, write_params

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(store: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """`make server` on a free loopback port, its own process group; returns once /health answers."""
    port = free_port()
    proc = subprocess.Popen(["make", "--no-print-directory", "server", f"BIN={BIN}", "STAMP=", f"SERVER_PORT={port}",
                             f"SERVER_STORE={store}"], cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"make server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    stop_server(proc)
    raise AssertionError(f"no answer from {url}/health in 180 s:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # make, mlflow and its workers
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = tmp_path_factory.mktemp("server")
    proc, url = start_server(store / "store", store / "server.log")
    yield url, store / "store"
    stop_server(proc)
    assert proc.poll() is not None


def stage_env(url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DVC_ROOT", "DVC_STAGE", "DVC_EXP_NAME")}
    return {**env, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": url}


def test_stages_log_to_a_shared_server_and_everything_reads_back(server, tmp_path, tiny_raw):
    import mlflow
    from mlflow import MlflowClient

    url, store = server
    raw = copy.deepcopy(tiny_raw)
    raw["tracking"] = {"experiment": "team-study", "log_model": "pytorch"}
    write_params(tmp_path / "params.yaml", raw)
    env = stage_env(url)
    for args in (["prepare"], ["evaluator"], ["train-gan", "gan"], ["evaluate", "gan"]):
        done = subprocess.run([sys.executable, "-m", "stages", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlartifacts").exists()  # all on the server

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("team-study")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied: clients need no shared disk
    runs = {r.data.tags["dvc.stage"]: r for r in client.search_runs([experiment.experiment_id])}
    assert {"prepare", "evaluator", "train_gan@gan-42", "evaluate_gan@gan-42"} <= set(runs)
    train = runs["train_gan@gan-42"]
    assert train.info.status == "FINISHED"
    assert train.data.params["model"] == "gan" and train.data.params["config.optimizer"] == "rmsprop"
    assert [m.step for m in client.get_metric_history(train.info.run_id, "train_d_loss")] == [1, 2, 3]
    assert "curve_fid" in train.data.metrics and train.data.metrics["train_seconds"] > 0
    images = [f.path for f in client.list_artifacts(train.info.run_id, "images")]
    assert any(p.startswith("images/samples+step+2+") and p.endswith(".png") for p in images), images
    image = client.download_artifacts(train.info.run_id, next(p for p in images if p.endswith(".png")), str(tmp_path))
    assert Path(image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (store / "artifacts").is_dir()  # the bytes went through the server to its own store

    mlflow.set_tracking_uri(url)
    models = mlflow.search_logged_models(experiment_ids=[experiment.experiment_id],
                                         filter_string=f"source_run_id = '{train.info.run_id}'", output_format="list")
    assert len(models) == 1
    generator = mlflow.pytorch.load_model(models[0].model_uri)
    import torch

    z = torch.randn(3, raw["gans"]["gan"]["latent_dim"])
    out = generator.module()(z) if hasattr(generator, "module") else generator(z)
    assert out.shape == (3, 1, 28, 28) and 0 <= float(out.min()) and float(out.max()) <= 1
    evaluation = runs["evaluate_gan@gan-42"]
    assert 0 < evaluation.data.metrics["fid"]
