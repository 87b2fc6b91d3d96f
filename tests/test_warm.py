"""Warm starts (stages/warm.py): a stage forked from `make study`'s server does what it does in its own process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stages.warm import SOCKET_ENV, Server
from tests.conftest import ROOT, write_params

STEPS = (["prepare"], ["evaluator"], ["train-ae", "vae"], ["evaluate", "vae"])


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for key in ("DVC_ROOT", "MLFLOW_TRACKING_URI", SOCKET_ENV):  # each stage logs to its own directory's store
        env.pop(key, None)
    return env


def _stage(args: list[str], cwd: Path, env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          **kw)


@pytest.fixture(scope="module")
def server():
    srv = Server(_env())
    with srv as env:
        assert srv.ready(), "the warm-start server did not come up"
        yield srv, env


def _outputs(root: Path) -> dict[str, bytes]:
    """What a stage writes, less its timings (seconds differ from run to run, warm or not)."""
    timed = {"profile.json", "timing.json", "curve.json"}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in timed and p.parent.name != "curve" and "mlartifacts" not in p.parts
            and not p.name.startswith("mlflow.db")}


def test_a_warm_stage_writes_what_a_cold_one_writes_and_records_its_mlflow_run(tmp_path, tiny_raw, server):
    srv, warm_env = server
    for name, env in (("cold", _env()), ("warm", warm_env)):
        (tmp_path / name).mkdir()
        write_params(tmp_path / name / "params.yaml", tiny_raw)
        for args in STEPS:
            done = _stage(args, tmp_path / name, env)
            assert done.returncode == 0, done.stderr
    assert [s["argv"][:2] for s in srv.stages() if s["cold"] is None][-4:] == [a[:2] for a in STEPS]
    cold, warm = _outputs(tmp_path / "cold"), _outputs(tmp_path / "warm")
    assert "models/vae-42.pt" in warm and "metrics/vae-42.json" in warm
    assert warm == cold

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'warm' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["ae-gan-study"], output_format="list")
    assert {r.info.run_name for r in runs} >= {"train_ae@vae-42", "evaluate_ae@vae-42"}
    assert {r.info.status for r in runs} == {"FINISHED"}
    startup = __import__("json").loads((tmp_path / "warm" / "runs" / "vae-42" / "train" / "profile.json").read_text())
    assert 0 < startup["startup"] <= startup["wall"]  # counted from the stage process's own start


def test_the_worker_runs_the_code_on_disk_now_not_what_the_server_imported(tmp_path, server):
    """The server imported the study's modules from this checkout and dropped them; a stage started in another
    copy, whose pipeline/__init__.py was edited after the server came up, runs that copy's code."""
    _, env = server
    copy = tmp_path / "copy"
    shutil.copytree(ROOT / "stages", copy / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "pipeline", copy / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    init = copy / "pipeline" / "__init__.py"
    init.write_text(init.read_text() + "\nprint('the edited copy', flush=True)\n")
    done = _stage(["--help"], copy, {**env, "PYTHONPATH": str(copy)})
    assert done.returncode == 0, done.stderr
    assert "the edited copy" in done.stdout and "train-gan" in done.stdout


def test_bad_input_is_the_same_one_line_and_exit_status(tmp_path, server):
    _, env = server
    for run_env in (_env(), env):
        done = _stage(["fit"], tmp_path, run_env)
        assert done.returncode == 2
        assert done.stderr.strip() == "error: No such command 'fit'. (see python -m stages --help)"


def test_other_thread_settings_run_the_stage_on_its_own(tmp_path, server):
    srv, env = server
    threads = str(int(env.get("OMP_NUM_THREADS", "1")) + 1)
    done = _stage(["--help"], tmp_path, {**env, "OMP_NUM_THREADS": threads})
    assert done.returncode == 0, done.stderr
    assert srv.stages()[-1] == {"argv": ["--help"], "cold": "other load-time settings"}


def test_a_signal_to_the_stage_reaches_its_worker(tmp_path, tiny_raw, server):
    """DVC stops a stage by signalling its process: the worker doing the work stops with it, and the status says
    which signal (the shell's 128 + its number)."""
    srv, env = server
    raw = {**tiny_raw, "budget": {**tiny_raw["budget"], "images": 400 * 400}}  # far longer than the test waits
    write_params(tmp_path / "params.yaml", raw)
    for args in (["prepare"], ["evaluator"]):
        assert _stage([*args, "--tracking", "none"], tmp_path, env).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "stages", "train-gan", "gan", "--tracking", "none"], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "checkpoints" / "gan-42.ckpt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    workers = _grandchildren(srv.proc.pid)
    assert proc.poll() is None and workers, "the stage ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    time.sleep(0.5)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    assert not (tmp_path / "models" / "gan-42.pt").exists()


def _grandchildren(pid: int) -> list[int]:
    """The server's workers: children of its keepers, which are its children."""
    parents = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                status = (proc / "status").read_text()
            except OSError:
                continue
            parents[int(proc.name)] = int(status.split("PPid:")[1].split()[0])
    keepers = {p for p, parent in parents.items() if parent == pid}
    return [p for p, parent in parents.items() if parent in keepers]


def test_a_stage_started_while_the_server_imports_waits_for_it(tmp_path):
    """DVC may start the first stage before the server's imports are done: that stage waits for them and is
    forked from the server, not run beside it on the same cores."""
    srv = Server(_env())
    with srv as env:
        done = _stage(["--help"], tmp_path, env)  # at once: the server is still importing
        assert done.returncode == 0, done.stderr
        assert "train-gan" in done.stdout
        assert srv.stages() == [{"argv": ["--help"], "cold": None}]
