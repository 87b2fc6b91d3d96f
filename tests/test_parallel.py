"""`make study` at two jobs of one thread each, with real processes on the tiny profile: two `dvc repro -s` at once
give the same bytes twice, and a study killed (SIGKILL, the whole process group) while two stages run resumes on
rerun, ends with `dvc status` clean and the metrics of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stages.smoke import SMOKE_MODELS, copy_study
from tests.conftest import write_params

pytestmark = pytest.mark.e2e


def _study_copy(path: Path, tiny_raw: dict) -> tuple[Path, dict]:
    repo = copy_study(path)
    raw = dict(tiny_raw, jobs=2, threads=1)
    raw["budget"] = {**raw["budget"], "images": 3200}  # trainings long enough to be caught two at once
    for block, names in SMOKE_MODELS.items():
        raw[block] = {n: v for n, v in raw[block].items() if n in names}
    write_params(repo / "params.yaml", raw)
    env = {k: v for k, v in os.environ.items() if k not in ("DVC_ROOT", "MLFLOW_TRACKING_URI", "DVC_STAGE",
                                                           "STUDY_JOBS", "OMP_NUM_THREADS")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", PYTHONPATH=str(repo))
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm", "tiny"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
    return repo, env


def _study(repo: Path, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "stages.study"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _results(repo: Path) -> dict[str, bytes]:
    """What a study's seed writes that must be the same bytes: metrics and the training records (not the times)."""
    files = sorted((repo / "metrics").glob("*.json")) + sorted((repo / "plots").rglob("*_history/*.json"))
    files += sorted((repo / "runs").rglob("history.json"))
    out = {str(p.relative_to(repo)): p.read_bytes() for p in files}
    for p in sorted((repo / "plots" / "curve").glob("*.json")):  # each point's wall seconds aside
        out[str(p.relative_to(repo))] = json.dumps([{k: v for k, v in point.items() if k != "seconds"}
                                                    for point in json.loads(p.read_text())]).encode()
    return out


def _clean(repo: Path, env: dict) -> None:
    status = subprocess.run(["dvc", "status"], cwd=repo, env=env, capture_output=True, text=True).stdout
    assert "Data and pipelines are up to date" in status, status


@pytest.fixture(scope="module")
def first(tmp_path_factory, tiny_raw):
    repo, env = _study_copy(tmp_path_factory.mktemp("jobs") / "study", tiny_raw)
    out = _study(repo, env)
    return repo, env, out


def test_two_jobs_run_stages_at_once_and_give_the_same_bytes_twice(first, tmp_path, tiny_raw):
    repo, env, out = first
    assert "2 at a time" in out.stdout and ", 2 running," in out.stderr, out.stderr[-2000:]
    _clean(repo, env)
    other, other_env = _study_copy(tmp_path / "study", tiny_raw)
    _study(other, other_env)
    assert _results(other) == _results(repo)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert {"train_gan@dcgan-42", "evaluate_gan@dcgan-42", "train_ae@stacked-42", "report"} <= lock.keys()
    assert lock["train_gan@dcgan-42"]["params"]["params.yaml"]["threads"] == 1


def test_a_study_killed_while_two_stages_run_resumes_to_the_same_metrics(first, tmp_path, tiny_raw):
    repo, env, _ = first
    killed, killed_env = _study_copy(tmp_path / "study", tiny_raw)
    proc = subprocess.Popen([sys.executable, "-m", "stages.study"], cwd=killed, env=killed_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    two = False
    deadline = time.monotonic() + 120
    for text in proc.stderr:  # progress lines: kill once two trainings are in flight and both have checkpointed
        if ", 2 running," in text and "train_" in text:
            while time.monotonic() < deadline and len(list((killed / "checkpoints").glob("*-42.ckpt"))) < 2:
                time.sleep(0.05)
            two = len(list((killed / "checkpoints").glob("*-42.ckpt"))) >= 2
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert two, "the study never had two trainings in flight"
    assert not (killed / "reports" / "README.md").exists()
    time.sleep(3)  # the warm server notices its parent is gone and stops
    _study(killed, killed_env)
    _clean(killed, killed_env)
    assert _results(killed) == _results(repo)
