"""The real pipeline: `dvc repro` on tiny params in a temporary git copy of this repository, then the loop a
user lives in: commit, edit one param, `dvc status`, `dvc params diff`, `dvc repro`, `dvc metrics diff`,
`dvc exp run --temp -S ...`, all recorded in one MLflow database at the repository root."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stages.smoke import copy_study
from tests.conftest import write_params

pytestmark = pytest.mark.e2e


# The tiny study's models: every family, and a model for each section of the report (the registry-wide tests train,
# save and export every model in-process; here DVC, MLflow and the report see one of each kind).
E2E_MODELS = {"autoencoders": ("pca", "linear", "stacked", "greedy", "denoising_gaussian", "sparse_kl", "vae"),
              "gans": ("gan", "dcgan", "progan", "progan_no_growing", "stylegan"), "diffusion": ("ddpm",)}


def sh(*cmd: str, cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_raw):
    repo = copy_study(tmp_path_factory.mktemp("e2e") / "study")  # the code and params, not the results
    raw = dict(tiny_raw, tracking={**tiny_raw["tracking"], "log_model": "pytorch"})
    for block, names in E2E_MODELS.items():
        raw[block] = {n: v for n, v in raw[block].items() if n in names}
    write_params(repo / "params.yaml", raw)
    env = {k: v for k, v in os.environ.items() if k not in ("DVC_ROOT", "MLFLOW_TRACKING_URI", "DVC_STAGE")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # `python` = this interpreter
    env["PYTHONPATH"] = str(repo)
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "config", "user.email", "e2e@example.com"],
                ["git", "config", "user.name", "e2e"], ["git", "add", "-A"], ["git", "commit", "-qm", "tiny study"]):
        sh(*cmd, cwd=repo, env=env)
    first = sh("dvc", "repro", cwd=repo, env=env)
    return repo, env, first


def test_repro_produces_metrics_report_and_mlflow_runs(study):
    repo, env, first = study
    for stage in ("prepare", "evaluator", "train_ae@pca-42", "train_ae@stacked-42", "train_ae@vae-42",
                  "train_gan@dcgan-42", "evaluate_ae@vae-42", "train_diffusion@ddpm-42", "evaluate_diffusion@ddpm-42",
                  "report"):
        assert f"Running stage '{stage}'" in first.stdout
    evaluator = json.loads((repo / "metrics" / "evaluator.json").read_text())
    assert 0.25 < evaluator["test_accuracy"] <= 1  # two epochs on 400 images: well above chance (0.1)
    floor = evaluator["real_vs_real"]
    assert floor["n_real"] == 100 and floor["n_generated"] == 100 and 0 <= floor["precision"] <= 1  # the test split
    assert floor["memorization"] < 1e-6 < floor["memorization_control"]  # training images copy; test images do not
    stacked = json.loads((repo / "metrics" / "stacked-42.json").read_text())
    assert 0 < stacked["test_mse"] < 0.15 and stacked["code_size"] == 30 and stacked["pca_test_mse"] > 0
    dcgan = json.loads((repo / "metrics" / "dcgan-42.json").read_text())
    assert dcgan["fid"] > evaluator["real_vs_real"]["fid"] and dcgan["n_generated"] == 100 and dcgan["sample_sets"] == 2
    assert dcgan["n_real"] == 100 and len(dcgan["fid_val_sets"]) == len(dcgan["fid_train_sets"]) == 2  # test; beside
    assert dcgan["memorization"] > 0 and dcgan["nearest_train_pixels"] > 0
    report = (repo / "reports" / "README.md").read_text()
    assert "## Autoencoders" in report and "## Generative quality" in report and "| stacked |" in report
    assert "## Where the time goes" in report and "training ended" in report  # profile.json, health.json
    assert "| share of the peak |" in report  # timing.json's FLOPs per image against the measured peak
    timing = json.loads((repo / "runs" / "dcgan-42" / "train" / "timing.json").read_text())
    assert timing["flops_per_image"] > 0 and 0 < timing["peak_share"] < 1
    profile = json.loads((repo / "runs" / "stacked-42" / "train" / "profile.json").read_text())
    assert profile["steps"] > 0 and profile["wall"] >= profile["steps"] + profile["startup"]
    assert (repo / "reports" / "figures" / "curves_gans.png").stat().st_size > 1000
    assert "## Diffusion: denoising in steps" in report and "| ddpm |" in report and "sampling (s / 1,000)" in report
    assert {"noise_schedules.png", "ddpm_steps_sweep.png", "ddpm_trajectory.png"} <= {
        p.name for p in (repo / "reports" / "figures").iterdir()}

    # DVC plots: every model's per-epoch curves and every generative model's FID curve, by directory definition
    plots = json.loads(sh("dvc", "plots", "show", "--json", cwd=repo, env=env).stdout)
    assert not plots.get("errors"), plots["errors"]
    data = plots["data"]
    assert {"plots/autoencoder_history/stacked-42.json", "plots/gan_history/dcgan-42.json",
            "plots/curve/dcgan-42.json", "plots/curve/vae-42.json", "plots/diffusion_history/ddpm-42.json",
            "plots/curve/ddpm-42.json"} <= data.keys(), sorted(data)
    values = data["plots/gan_history/dcgan-42.json"][0]["content"]["data"]["values"]  # one row per epoch and y field
    history = json.loads((repo / "runs" / "dcgan-42" / "train" / "history.json").read_text())
    assert [v["epoch"] for v in values if v["field"] == "train_g_loss"] == [r["epoch"] for r in history]
    assert {v["field"] for v in values} == {"train_d_loss", "train_g_loss"}
    curve = data["plots/curve/vae-42.json"][0]["content"]["data"]["values"]
    assert [v["images"] for v in curve if v["field"] == "fid"] == [384, 800] and all(v["fid"] > 0 for v in curve)

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["ae-gan-study"], output_format="list")
    stages = {r.data.tags["dvc.stage"] for r in runs}
    assert {"evaluator", "train_ae@stacked-42", "train_gan@dcgan-42", "evaluate_gan@dcgan-42", "report"} <= stages
    commit = sh("git", "rev-parse", "HEAD", cwd=repo, env=env).stdout.strip()
    assert all(r.data.tags["git.commit"] == commit for r in runs)
    assert (repo / "mlartifacts").is_dir()


def test_a_teammate_pulls_the_study_from_a_dvc_remote_and_has_nothing_to_rerun(study, tmp_path):
    """`dvc remote add` + `dvc push` here; a fresh `git clone` + `dvc pull` there gets byte-identical models and
    outputs, and `dvc status` / `dvc repro` there have nothing to do."""
    repo, env, _ = study
    remote = tmp_path / "remote"
    sh("dvc", "remote", "add", "-f", "-d", "team", str(remote), cwd=repo, env=env)
    sh("git", "add", "-A", cwd=repo, env=env)
    sh("git", "commit", "-qm", "tiny study results and the team remote", cwd=repo, env=env)
    pushed = sh("dvc", "push", cwd=repo, env=env).stdout
    assert "pushed" in pushed and remote.is_dir()

    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path, env=env)
    assert not (clone / "models" / "dcgan-42.pt").exists()
    sh("dvc", "pull", cwd=clone, env={**env, "PYTHONPATH": str(clone)})
    for path in sorted((repo / "models").glob("*.pt")) + sorted((repo / "runs").rglob("*.json")):
        there = clone / path.relative_to(repo)
        assert there.read_bytes() == path.read_bytes(), path
    assert "Data and pipelines are up to date" in sh("dvc", "status", cwd=clone, env=env).stdout
    again = sh("dvc", "repro", cwd=clone, env={**env, "PYTHONPATH": str(clone)}).stdout
    assert "Running stage" not in again, again


def test_the_user_loop_reruns_only_what_changed(study):
    repo, env, _ = study
    sh("git", "add", "-A", cwd=repo, env=env)
    sh("git", "commit", "--allow-empty", "-qm", "results", cwd=repo, env=env)
    assert "up to date" in sh("dvc", "repro", cwd=repo, env=env).stdout  # the no-op rerun

    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["autoencoders"]["stacked"]["epochs"] = 3
    write_params(repo / "params.yaml", raw)
    changed = set(json.loads(sh("dvc", "status", "--json", cwd=repo, env=env).stdout))
    assert changed == {"train_ae@stacked-42", "report"}  # downstream stages show up once their inputs change
    params = json.loads(sh("dvc", "params", "diff", "--json", cwd=repo, env=env).stdout)
    epochs = params["params.yaml"]["autoencoders.stacked.epochs"]
    assert (epochs["old"], epochs["new"]) == (2, 3)

    study = sh("make", "study", f"BIN={Path(sys.executable).parent}", "STAMP=", cwd=repo, env=env)  # the README's way
    ran = {line.split("'")[1] for line in study.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"train_ae@stacked-42", "evaluate_ae@stacked-42", "report"}
    assert "make study: 3 stages to run" in study.stdout
    assert "make study: 3 of 3 stage commands started warm" in study.stdout  # forked from the warm-start server
    places = re.findall(r"\[study (\d)/3, (?:\d running, )?(?:under a minute|about \d+ min) left\] (\S+)", study.stdout + study.stderr)
    assert places == [("1", "train_ae@stacked-42"), ("2", "evaluate_ae@stacked-42"), ("3", "report")], study.stderr
    diff = json.loads(sh("dvc", "metrics", "diff", "--json", cwd=repo, env=env).stdout)
    assert set(diff["metrics/stacked-42.json"]) >= {"test_mse", "probe_accuracy"}
    assert "metrics/vae-42.json" not in diff

    sh("git", "add", "-A", cwd=repo, env=env)
    sh("git", "commit", "-qm", "three epochs", cwd=repo, env=env)
    lr = 0.001 if raw["autoencoders"]["vae"]["lr"] != 0.001 else 0.003  # a value other than the one params.yaml holds
    exp = sh("dvc", "exp", "run", "--temp", "-n", "faster-vae", "-S", f"autoencoders.vae.lr={lr}", cwd=repo, env=env)
    assert "Running stage 'train_ae@vae-42'" in exp.stdout
    shown = sh("dvc", "exp", "show", "--json", cwd=repo, env=env).stdout
    assert "faster-vae" in shown

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["ae-gan-study"], output_format="list")
    tagged = [r for r in runs if r.data.tags.get("dvc.experiment") == "faster-vae"]
    assert {r.data.tags["dvc.stage"] for r in tagged} >= {"train_ae@vae-42", "evaluate_ae@vae-42"}


def test_an_edited_source_file_makes_exactly_its_importers_stale(study):
    """Change one function of pipeline/evaluate/metrics.py: `dvc status` lists every stage whose command imports it
    (read from the code) and no other; the same for the report's own code."""
    from dvc.repo import Repo

    from pipeline.code import command_files

    repo, env, _ = study
    with Repo(str(repo)) as dvc:
        commands = {s.name: s.cmd.split()[3].replace("-", "_") for s in dvc.index.stages}  # this cwd is not the repo
    for edited in ("pipeline/evaluate/metrics.py", "pipeline/report/sections.py"):
        path = repo / edited
        original = path.read_text()
        path.write_text(original.replace("def subsample(", "def subsample(  # edited\n", 1)
                        if "def subsample(" in original else original + "\n# edited\n")
        try:
            changed = set(json.loads(sh("dvc", "status", "--json", cwd=repo, env=env).stdout))
        finally:
            path.write_text(original)
        importers = {stage for stage, command in commands.items() if edited in command_files(command)}
        assert changed == importers, edited
    assert {"report"} == {s for s, c in commands.items() if "pipeline/report/sections.py" in command_files(c)}


@pytest.mark.parametrize("edited, models", [("pipeline/models/dcgan.py", {"dcgan"}),
                                            ("pipeline/models/progan.py", {"progan", "progan_no_growing", "stylegan"})])
def test_a_model_edit_reruns_that_model_only(study, edited, models):
    """An edit to one model's file makes that model's stages stale (and those of the models built on the same
    file: ProGAN's ablations, StyleGAN's discriminator) and the report, and no other stage."""
    repo, env, _ = study
    path = repo / edited
    original = path.read_text()
    path.write_text(original + "\n# edited\n")
    try:
        changed = set(json.loads(sh("dvc", "status", "--json", cwd=repo, env=env).stdout))
    finally:
        path.write_text(original)
    assert changed == {f"{stage}@{m}-42" for m in models for stage in ("train_gan", "evaluate_gan")} | {"report"}


def test_the_learning_rate_sweep_runs_as_queued_experiments_at_the_selection_seed(study):
    """`make sweep` on a GAN (lr_g = lr_d) and the VAE (lr) and a two-value grid: queued DVC experiments at the
    selection seed (each model's stages only), run by `dvc queue start`, collected from their git refs into
    metrics/lr_sweep.json, which the report's Tuning effort section shows."""
    repo, env, _ = study
    bin_dir = Path(sys.executable).parent
    sh("git", "add", "-A", cwd=repo, env=env)  # a commit of its own: `dvc exp show` lists the experiments of HEAD
    sh("git", "commit", "--allow-empty", "-qm", "before the sweep", cwd=repo, env=env)
    sh("make", "sweep", f"BIN={bin_dir}", "STAMP=", "SWEEP_MODELS=gan vae", "LR_GRID=0.001 0.003", "SWEEP_ROUNDS=1",
       cwd=repo, env=env)
    summary = json.loads((repo / "metrics" / "lr_sweep.json").read_text())
    assert summary["grid"] == ["0.001", "0.003"] and summary["budget_images"] == 800
    used = yaml.safe_load((repo / "params.yaml").read_text())["gans"]["gan"]["lr_g"]  # what the study itself uses
    assert set(summary["results"]["gan"]) == {"0.001", "0.003"} and summary["used"]["gan"] == f"{float(used):g}"
    assert summary["best"]["gan"] in ("0.001", "0.003")
    vae = yaml.safe_load((repo / "params.yaml").read_text())["autoencoders"]["vae"]["lr"]
    assert set(summary["results"]["vae"]) == {"0.001", "0.003"} and summary["used"]["vae"] == f"{float(vae):g}"
    assert all(c["fid"] > 0 for c in summary["results"]["vae"].values())  # the VAE's samples, validation FID
    sh("dvc", "repro", "report", cwd=repo, env=env)
    report = (repo / "reports" / "README.md").read_text()
    tuning = report.split("## Tuning effort")[1].split("\n## ")[0]
    assert "| gan |" in tuning and "| vae |" in tuning

    cells = summary["results"]["gan"]  # each cell's validation FID, read from its experiment's metrics/gan-7.json
    assert cells["0.001"]["fid"] != cells["0.003"]["fid"] and all(c["seeds"] == [7] for c in cells.values())

    # what the rules ask next (a best value at an end of a two-value grid: one step beyond it), planned from the
    # cells done; then the batch-size stage at the best learning rate queued by hand, run by the next `make sweep`
    # (the two other batch sizes; the one in use is the lr cell), which stops there (no round of its own)
    planned = sh(sys.executable, "-m", "stages.sweep", "run", "gan", "--grid", "0.001 0.003", "--dry-run", cwd=repo,
                 env=env).stdout
    beyond = "0.0003" if summary["best"]["gan"] == "0.001" else "0.01"
    assert planned.splitlines()[0].startswith(f"dvc exp run --queue -n lr-gan-{beyond} -S seeds=[7]")
    sh(sys.executable, "-m", "stages.sweep", "queue", "gan", "--stage", "batch", cwd=repo, env=env)
    sh("make", "sweep", f"BIN={bin_dir}", "STAMP=", "SWEEP_MODELS=gan", "SWEEP_ROUNDS=0", cwd=repo, env=env)
    summary = json.loads((repo / "metrics" / "lr_sweep.json").read_text())
    row = summary["batch"]["gan"]
    assert set(row) == {"16", "32", "64"} and {c["lr"] for c in row.values()} == {summary["best"]["gan"]}
    assert summary["batch_best"]["gan"] in row and set(summary["results"]["gan"]) == {"0.001", "0.003"}


def test_two_queued_experiments_run_at_once_against_one_tracking_server(study, tmp_path):
    """`dvc queue start -j 2` runs two experiments in parallel; both log to one `make server` (SQLite behind a
    server process, not a SQLite file written by two processes), and neither run is lost. Then the README's compare
    step on those two experiments: a table of the headline metrics and the params that differ, as wide as the
    terminal (nothing folded into '…' at 120 columns), with both experiments' FIDs; then the headline diff."""
    from mlflow import MlflowClient

    from tests.test_server import start_server, stop_server

    repo, env, _ = study
    proc, url = start_server(tmp_path / "store", tmp_path / "server.log")
    try:
        queued = {**env, "MLFLOW_TRACKING_URI": url}
        names = {"par-a": "0.004", "par-b": "0.0008"}
        sh("dvc", "queue", "stop", "--kill", cwd=repo, env=env, check=False)  # no worker left from another test
        # the compare step reads the experiments of HEAD: only these two (a sweep's cells would add columns)
        sh("dvc", "exp", "remove", "-A", "-q", cwd=repo, env=env, check=False)
        # the study's MLflow experiment exists before two stages log at once (the first `dvc repro` against a
        # server creates it; two stages creating it at the same instant would race)
        client = MlflowClient(tracking_uri=url)
        experiment_name = yaml.safe_load((repo / "params.yaml").read_text())["tracking"]["experiment"]
        client.create_experiment(experiment_name)
        for name, lr in names.items():
            sh("dvc", "exp", "remove", "-q", name, cwd=repo, env=queued, check=False)
            sh("dvc", "exp", "run", "--queue", "-n", name, "-S", f"gans.gan.lr_g={lr}", "-S", f"gans.gan.lr_d={lr}",
               cwd=repo, env=queued)
        sh("dvc", "queue", "start", "-j", "2", cwd=repo, env=queued)
        deadline = time.time() + 900
        while time.time() < deadline:
            status = sh("dvc", "queue", "status", cwd=repo, env=queued).stdout
            if not any(word in status for word in ("Queued", "Running")):
                break
            time.sleep(5)
        mine = [line for line in status.splitlines() if any(n in line for n in names)]
        assert len(mine) == 2 and all("Success" in line for line in mine), status
        shown = sh("dvc", "exp", "show", "--json", cwd=repo, env=env).stdout
        assert all(name in shown for name in names)
        # the two experiments' loss curves, overlaid by `dvc plots diff` (the param changed: the curves differ)
        diff = json.loads(sh("dvc", "plots", "diff", *names, "--json", cwd=repo, env=env).stdout)
        values = diff["data"]["plots/gan_history/gan-42.json"][0]["content"]["data"]["values"]
        by_rev = {}
        for v in values:
            if v["field"] == "train_d_loss":
                by_rev.setdefault(v["rev"], []).append(v["train_d_loss"])
        assert len(by_rev) == 2 and len(set(map(tuple, by_rev.values()))) == 2, by_rev

        experiment = client.get_experiment_by_name(experiment_name)
        runs = client.search_runs([experiment.experiment_id])
        by_exp = {}
        for r in runs:
            by_exp.setdefault(r.data.tags.get("dvc.experiment"), set()).add(r.data.tags["dvc.stage"])
        for name in names:
            assert {"train_gan@gan-42", "evaluate_gan@gan-42", "report"} <= by_exp.get(name, set()), by_exp
        assert all(r.info.status == "FINISHED" for r in runs)

        # the README's compare step on those two experiments
        names, bin_dir = tuple(names), Path(sys.executable).parent
        shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=repo, env=env).stdout)
        fids = {}
        for commit in shown:
            for exp in commit.get("experiments") or []:
                data = exp["revs"][0]["data"]
                if exp.get("name") in names:
                    fids[exp["name"]] = data["metrics"]["reports/headline.json"]["data"]["gan"]["fid"]
        assert set(fids) == set(names) and fids[names[0]] != fids[names[1]]
        for width in (120, 80):
            out = sh("make", "-s", "--no-print-directory", "compare", f"BIN={bin_dir}", "STAMP=",
                     f"REVS={' '.join(names)}", cwd=repo, env={**env, "COLUMNS": str(width)}).stdout
            table, diff = out.split("Path", 1)
            header = next(line for line in table.splitlines() if "Experiment" in line)
            columns = header.split()
            assert "gan.fid" in columns and "gans.gan.lr_g" in columns, table
            assert len(columns) <= 8 and not any(c.startswith(("metrics/", "pipeline/")) for c in columns), table
            assert all(len(line) <= width for line in table.splitlines()), table
            if width >= 120:
                assert "…" not in table, table  # nothing folded away (80: DVC may fold)
            rows = {name: next(line for line in table.splitlines() if f"[{name}]" in line) for name in fids}
            for name, fid in fids.items():
                assert f"{fid:.5g}"[:4] in rows[name], (name, fid, table)
            assert "gan.fid" in diff and all(name in diff for name in names), diff
    finally:
        sh("dvc", "queue", "stop", "--kill", cwd=repo, env=env, check=False)
        stop_server(proc)


def test_a_second_seed_adds_its_own_stages_and_the_report_aggregates(study):
    repo, env, _ = study
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["seeds"] = [42, 43]
    raw["autoencoders"] = {"pca": raw["autoencoders"]["pca"]}  # one model of each family
    raw["gans"] = {"gan": raw["gans"]["gan"]}
    write_params(repo / "params.yaml", raw)
    out = sh("dvc", "repro", cwd=repo, env=env).stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert {"train_ae@pca-43", "train_gan@gan-43", "evaluate_gan@gan-43", "train_diffusion@ddpm-43", "report"} <= ran
    assert not any(stage.endswith("-42") for stage in ran)  # the first seed's runs are up to date
    report = (repo / "reports" / "README.md").read_text()
    assert "2 training seeds (42, 43)" in report and "Mean ± standard deviation over the 2 training seeds" in report
    assert "Neighbours in that ranking: 2 training seeds: no claim" in report  # a test over seeds needs 3
    assert re.search(r"each evaluated on \d+ disjoint sample sets", report)  # a count, not a mean over seeds (5.0)

    # each run's records are in git, its model, grids and figures in DVC's cache: a seed trained on another machine
    # (its cached outputs absent here) still counts in full when the report is rebuilt from a clone
    for path, ignored in (("runs/gan-43/train/history.json", False), ("runs/gan-43/eval/timing.json", False),
                          ("runs/gan-43/grids", True), ("runs/gan-43/figures", True), ("models/gan-43.pt", True)):
        assert (sh("git", "check-ignore", "-q", path, cwd=repo, env=env, check=False).returncode == 0) == ignored, path
    for path in [*repo.glob("models/*-43.pt"), *repo.glob("runs/*-43/grids"), *repo.glob("runs/*-43/figures")]:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    sh("dvc", "repro", "--force", "--single-item", "report", cwd=repo, env=env)
    assert (repo / "reports" / "README.md").read_text() == report
