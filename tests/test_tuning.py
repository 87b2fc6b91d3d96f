"""The tuning protocol as `make sweep` runs it (`python -m stages.sweep run`): planned from what is done, round after
round, until its rules ask for nothing more; the DVC queue replaced by experiments committed under refs/exps/, as
DVC leaves them."""

from __future__ import annotations

import json
import subprocess

import yaml

from pipeline.config import read_params
from pipeline.tuning import cell_command, cell_name, collect, experiment_refs, plan, record_diverged, set_params

PARAMS = """\
seeds: [42]  # the reporting seeds
budget: {images: 64000}

gans:
  gan: &gan
    objective: nonsaturating  # the book's
    lr_g: 0.001
    lr_d: 0.001
    batch_size: 32  # trains for budget.images
  dcgan:
    <<: *gan
    upsamplings: 2

evaluate: {}
"""


def _repo(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@t")
    git("config", "user.name", "t")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "params.yaml").write_text(PARAMS)
    git("add", "-A")
    git("commit", "-qm", "the study")
    return git


def _run_cell(tmp_path, git, cell, fid):
    """What the queued `dvc exp run` of `cell` leaves: a commit of params.yaml as the workspace has it with the
    cell's -S values, and the model's metrics at the cell's seed, under refs/exps/<name>."""
    kind, model, lr, batch, seed = cell
    workspace = (tmp_path / "params.yaml").read_text()
    summary = tmp_path / "metrics" / "lr_sweep.json"  # the workspace's own: the queue runs apart from it
    kept = summary.read_text() if summary.is_file() else None
    params = read_params(workspace)
    params["seeds"] = [seed]
    params["gans"][model].update(lr_g=lr, lr_d=lr, **({"batch_size": batch} if batch else {}))
    metrics_batch = batch or params["gans"][model]["batch_size"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    fid_val = fid(model, lr, metrics_batch, seed)
    (tmp_path / "metrics").mkdir(exist_ok=True)
    (tmp_path / "metrics" / f"{model}-{seed}.json").write_text(json.dumps(
        {"fid": fid_val + 1000, "fid_val": fid_val, "fid_val_std": 4.0, "recall": 0.5, "classes_covered": 10}))
    git("add", "-A")
    git("commit", "-qm", cell_name(kind, model, lr if kind == "lr" else batch, seed))
    git("update-ref", f"refs/exps/ab/cdef/{cell_name(kind, model, lr if kind == 'lr' else batch, seed)}", "HEAD")
    git("reset", "-q", "--hard", "HEAD~1")
    (tmp_path / "params.yaml").write_text(workspace)
    if kept is not None:
        summary.parent.mkdir(exist_ok=True)
        summary.write_text(kept)


def _protocol(tmp_path, git, fid, models, grid, until="batch"):
    """`stages.sweep run`'s loop without DVC: plan, set what the rules decided or run the round's cells, collect."""
    rounds = []
    summary = collect(tmp_path, tmp_path / "metrics" / "lr_sweep.json") if experiment_refs(tmp_path) else None
    for _ in range(20):
        params = read_params((tmp_path / "params.yaml").read_text())
        cells, edits = plan(summary, params, models, grid, until)
        if edits:
            set_params(tmp_path / "params.yaml", edits)
            rounds.append(("set", edits))
        elif not cells:
            return rounds, summary
        for cell in cells if not edits else []:
            _run_cell(tmp_path, git, cell, fid)
            rounds.append(cell_name(cell[0], cell[1], cell[2] if cell[0] == "lr" else cell[3], cell[4]))
        summary = collect(tmp_path, tmp_path / "metrics" / "lr_sweep.json")
    raise AssertionError("the protocol did not settle in 20 rounds")


def test_the_protocol_runs_the_grid_its_rules_the_batch_stage_and_the_neighbours_to_a_fixed_point(tmp_path):
    git = _repo(tmp_path)

    def fid(model, lr, batch, seed):  # the run each cell would give (validation FID; spread 4)
        if seed == 8:  # the close call at the second selection seed: 0.003 wins on the mean (196.5 vs 207.5)
            return {0.003: 190, 0.01: 215}[lr]
        return {(0.001, 32): 250, (0.003, 32): 203, (0.01, 32): 200, (0.03, 32): 260, (0.003, 16): 240,
                (0.003, 64): 150, (0.001, 64): 220, (0.01, 64): 170}[(lr, batch)]

    rounds, summary = _protocol(tmp_path, git, fid, ["gan"], [0.001, 0.003, 0.01])
    assert rounds == [
        "lr-gan-0.001", "lr-gan-0.003", "lr-gan-0.01",  # the grid
        "lr-gan-0.03", "lr-gan-0.01-s8", "lr-gan-0.003-s8",  # 0.01 at the top end: one step more; 0.003 within 4
        "bs-gan-16", "bs-gan-64",  # the batch-size stage at the best rate, 0.003
        ("set", {"gan": {"batch_size": 64}}),  # 64 wins: set, then the learning rate's neighbours at it
        "lr-gan-0.001", "lr-gan-0.01",
        ("set", {"gan": {"lr_g": 0.003, "lr_d": 0.003}}),  # the best rate, written into params.yaml
    ]
    assert list(summary["results"]["gan"]) == ["0.001", "0.003", "0.01"]  # the grid at batch 64
    assert {b: c["fid"] for b, c in summary["batch"]["gan"].items()} == {"16": 240, "32": 196.5, "64": 150}
    assert summary["used"] == summary["best"] == {"gan": "0.003"} and summary["next"] == {}
    params = read_params((tmp_path / "params.yaml").read_text())["gans"]["gan"]
    assert (params["lr_g"], params["lr_d"], params["batch_size"]) == (0.003, 0.003, 64)


def test_a_summary_whose_experiments_are_gone_keeps_its_batch_row_and_names_what_it_left_out(tmp_path):
    """A sweep carried on another machine (its refs/exps gone, the committed summary left): after the batch size
    changes there, the row still shows the grid's cell at the old batch size, and the cells of the old setting stay
    named as left out, however often the summary is collected again."""
    from stages.sweep import _summary

    git = _repo(tmp_path)
    def fid(model, lr, batch, seed):
        return {(0.001, 32): 250, (0.003, 32): 200, (0.01, 32): 230, (0.003, 16): 240, (0.003, 64): 150,
                (0.001, 64): 220, (0.01, 64): 170}[(lr, batch)]
    out, grid = tmp_path / "metrics" / "lr_sweep.json", [0.001, 0.003, 0.01]
    summary = None
    for _ in range(2):  # the grid, then the batch-size stage at its best rate
        cells, edits = plan(summary, read_params((tmp_path / "params.yaml").read_text()), ["gan"], grid, "batch")
        assert cells and not edits
        for cell in cells:
            _run_cell(tmp_path, git, cell, fid)
        summary = collect(tmp_path, out)
    assert summary["batch"]["gan"]["32"]["lr_grid_cell"]  # the grid's own cell, shown in the row
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=tmp_path,
                          capture_output=True, text=True, check=True).stdout.split()
    for ref in refs:  # the machine goes away; the summary stays
        git("update-ref", "-d", ref)

    summary = _summary(tmp_path, out)
    _, edits = plan(summary, read_params((tmp_path / "params.yaml").read_text()), ["gan"], grid, "batch")
    assert edits == {"gan": {"batch_size": 64}}
    set_params(tmp_path / "params.yaml", edits)
    summary = _summary(tmp_path, out)
    assert {b: c["fid"] for b, c in summary["batch"]["gan"].items()} == {"16": 240, "32": 200, "64": 150}
    cells, _ = plan(summary, read_params((tmp_path / "params.yaml").read_text()), ["gan"], grid, "batch")
    assert [cell_name(k, m, lr, s) for k, m, lr, _, s in cells] == ["lr-gan-0.001", "lr-gan-0.01"]
    for cell in cells:
        _run_cell(tmp_path, git, cell, fid)
    gone = "experiment lr-gan-0.03 (gans.gan differs in batch_size)"  # named by the machine that had it
    stale = "experiment lr-gan-0.01 (gans.gan differs in batch_size)"  # an experiment here now: judged afresh
    out.write_text(json.dumps({**json.loads(out.read_text()), "left_out": [gone, stale]}))
    first = collect(tmp_path, out)
    again = collect(tmp_path, out)  # the runner collects after every round: nothing may wear away
    for summary in (first, again):
        assert {b: c["fid"] for b, c in summary["batch"]["gan"].items()} == {"16": 240, "32": 200, "64": 150}
        assert {v: c["fid"] for v, c in summary["results"]["gan"].items()} == {"0.001": 220, "0.003": 150,
                                                                                "0.01": 170}
        assert summary["left_out"] == [gone, "the cell gan at 0.003"]  # at batch 32; 0.001 and 0.01 ran again


def test_the_protocol_plans_from_what_is_done_and_pins_models_that_merge_an_edited_block(tmp_path):
    git = _repo(tmp_path)
    def fid(model, lr, batch, seed):
        return {0.001: 300, 0.003: 200, 0.01: 250}[lr] + (0 if model == "gan" else 50)
    params = read_params(PARAMS)
    cells, edits = plan(None, params, ["gan", "dcgan"], [0.001, 0.003, 0.01], until="lr")
    assert [cell_name(k, m, lr, s) for k, m, lr, _, s in cells] == [
        "lr-gan-0.001", "lr-gan-0.003", "lr-gan-0.01", "lr-dcgan-0.001", "lr-dcgan-0.003", "lr-dcgan-0.01"]
    assert edits == {}
    assert cell_command(cells[0], params) == [
        "dvc", "exp", "run", "--queue", "-n", "lr-gan-0.001", "-S", "seeds=[7]", "-S", "gans.gan.lr_g=0.001", "-S",
        "gans.gan.lr_d=0.001", "-S", "++evaluate.scope=selection", "evaluate_gan@gan-7"]
    for cell in cells[:4]:  # an interrupted sweep: four cells ran
        _run_cell(tmp_path, git, cell, fid)
    summary = collect(tmp_path, tmp_path / "metrics" / "lr_sweep.json")
    cells, _ = plan(summary, params, ["gan", "dcgan"], [0.001, 0.003, 0.01], until="lr")
    assert [cell_name(k, m, lr, s) for k, m, lr, _, s in cells] == ["lr-dcgan-0.003", "lr-dcgan-0.01"]

    rounds, summary = _protocol(tmp_path, git, fid, ["gan"], [0.001, 0.003, 0.01], until="lr")
    assert rounds == [("set", {"gan": {"lr_g": 0.003, "lr_d": 0.003}})]  # its cells ran before the interruption
    text = (tmp_path / "params.yaml").read_text()
    after = read_params(text)
    assert after["gans"]["gan"]["lr_g"] == after["gans"]["gan"]["lr_d"] == 0.003
    assert after["gans"]["dcgan"]["lr_g"] == 0.001  # it merges gan's block: it keeps its own value, written out
    assert "objective: nonsaturating  # the book's" in text and "batch_size: 32  # trains for budget.images" in text
    dcgan = text.split("  dcgan:\n")[1].split("\n\n")[0]
    assert dcgan.splitlines() == ["    <<: *gan", "    upsamplings: 2", "    lr_g: 0.001", "    lr_d: 0.001"]


def test_the_protocol_runner_refuses_bad_arguments_with_one_line():
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for args, message in ((["--until", "everything"], "--until 'everything': lr or batch"),
                          (["--grid", "0.01 fast"], "--grid '0.01 fast': learning rates"),
                          (["--grid", "0 0.01"], "each above 0"),
                          (["stacked"], "'stacked' is not a generator of params.yaml")):
        done = subprocess.run([sys.executable, "-m", "stages.sweep", "run", *args, "--dry-run"], cwd=root,
                              capture_output=True, text=True)
        assert done.returncode != 0 and message in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_diverged_cell_is_the_grids_answer_for_it_not_a_cell_to_rerun(tmp_path):
    git = _repo(tmp_path)
    params, out = read_params(PARAMS), tmp_path / "metrics" / "lr_sweep.json"
    cells, _ = plan(None, params, ["gan"], [0.001, 0.003, 0.01], until="lr")
    for cell in cells:  # 0.01 stops on a non-finite loss: no model, no metrics, no experiment ref
        if cell[2] == 0.01:
            record_diverged(out, cell, params, "gan: training diverged at epoch 3, step 180: a loss term ...")
        else:
            _run_cell(tmp_path, git, cell, lambda model, lr, batch, seed: {0.001: 300, 0.003: 200}[lr])
    summary = collect(tmp_path, out)
    assert summary["results"]["gan"]["0.01"]["fid"] is None and "diverged" in summary["results"]["gan"]["0.01"]
    assert summary["best"]["gan"] == "0.003" and summary["next"] == {}  # it loses; nothing is rerun
    assert plan(summary, params, ["gan"], [0.001, 0.003, 0.01], until="lr") == (
        [], {"gan": {"lr_g": 0.003, "lr_d": 0.003}})
