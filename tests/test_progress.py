"""A running study says which stage of how many it is in and about how long the rest will take."""

from __future__ import annotations

import json

from pipeline.progress import DEFAULT_SECONDS, MIN_EVIDENCE, estimate, expected_seconds, line, read_times


def test_unknown_stages_count_as_the_median_of_their_kind():
    times = {"train_gan@a-42": 100.0, "train_gan@b-42": 300.0, "train_gan@c-42": 200.0, "report": 20.0}
    assert expected_seconds(["train_gan@new-42", "report", "prepare"], times) == [200.0, 20.0, DEFAULT_SECONDS]
    times |= {"train_gan@a-43": 140.0}  # the same model at other seeds: their mean
    assert expected_seconds(["train_gan@a-101", "train_gan@a-43"], times) == [120.0, 140.0]


def test_the_rest_is_scaled_by_how_this_machine_did_so_far():
    plan = ["prepare", "evaluator", "train_gan@a-42", "report"]
    times = {"prepare": 10.0, "evaluator": 90.0, "train_gan@a-42": 400.0, "report": 20.0}
    assert estimate(plan, times, ["prepare"], 0.0) == (1, 520.0)
    assert estimate(plan, times, ["prepare", "evaluator", "train_gan@a-42"], 200.0) == (3, 2 * 420.0)  # twice as slow
    few = estimate(plan, {**times, "prepare": MIN_EVIDENCE / 2}, ["prepare", "evaluator"], 300.0)
    assert few == (2, 510.0)  # too little done to judge this machine by: the last study's times as they are
    assert estimate(plan, {}, ["prepare", "evaluator", "train_gan@a-42"], 40.0) == (3, 40.0)  # no last study: 20 s each


def test_the_place_counts_the_stages_started_whatever_order_dvc_runs_them_in():
    """DVC's process may order independent stages otherwise than the plan: the first stage it starts is 1 of n,
    with the whole plan left, and the time left is that of the stages not started yet."""
    plan = ["train_gan@a-42", "train_gan@b-42", "evaluate_gan@a-42", "evaluate_gan@b-42"]
    times = {"train_gan@a-42": 600.0, "train_gan@b-42": 300.0, "evaluate_gan@a-42": 60.0, "evaluate_gan@b-42": 40.0}
    assert estimate(plan, times, ["train_gan@b-42"], 0.0) == (1, 1000.0)
    assert estimate(plan, times, ["train_gan@b-42", "evaluate_gan@b-42"], 300.0) == (2, 700.0)  # as fast as last time
    assert line(plan, times, ["train_gan@b-42", "evaluate_gan@b-42", "train_gan@a-42"], 680.0) == (
        "[study 3/4, about 22 min left] train_gan@a-42")  # 340 s of work took 680 s: the 660 s left take twice that


def test_the_line_and_the_last_study_s_times(tmp_path):
    times = {"prepare": 60.0, "evaluator": 3000.0, "report": 600.0}
    plan = list(times)
    assert line(plan, times, ["prepare", "evaluator"], 120.0) == "[study 2/3, about 2 h 00 min left] evaluator"
    assert line(plan, times, plan, 3060.0) == "[study 3/3, about 10 min left] report"
    assert line(plan, {}, ["prepare"], 0.0) == "[study 1/3, under a minute left] prepare"
    path = tmp_path / "stage_times.json"
    path.write_text(json.dumps(times))
    assert read_times(path) == times
    assert read_times(tmp_path / "missing.json") == {}
    path.write_text("[1, 2]")
    assert read_times(path) == {}


def test_make_study_drops_lock_entries_of_stages_dvc_yaml_no_longer_has(tmp_path):
    """DVC keeps a removed stage's dvc.lock entry forever and rewrites the whole lock after every stage it runs;
    `make study` drops such entries first, and leaves the others as DVC wrote them."""
    import subprocess

    from stages.study import prune_lock

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text("stages:\n  hello:\n    cmd: echo hello > out.txt\n    outs:\n      - out.txt\n")
    subprocess.run(["dvc", "repro", "-q"], cwd=tmp_path, check=True)
    kept = (tmp_path / "dvc.lock").read_text()
    assert prune_lock(tmp_path) == []
    (tmp_path / "dvc.lock").write_text(kept + "  gone@a-42:\n    cmd: echo gone\n  gone@b-42:\n    cmd: echo gone\n")
    assert prune_lock(tmp_path) == ["gone@a-42", "gone@b-42"]
    assert (tmp_path / "dvc.lock").read_text() == kept
    assert "up to date" in subprocess.run(["dvc", "status"], cwd=tmp_path, capture_output=True, text=True).stdout


def test_the_plan_follows_the_arguments_given_to_dvc_repro(tmp_path, monkeypatch):
    """`make study`'s count and time left are of the stages `dvc repro ARGS` will run: targets, `--glob`,
    `--single-item` and `--force` narrow or widen the plan as they do DVC's run."""
    import subprocess

    from stages.study import plan

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  src:\n    cmd: echo 1 > src.txt\n    outs: [src.txt]\n"
        "  train:\n    matrix: {model: [a, b], seed: [1, 2]}\n    cmd: cat src.txt > ${item.model}-${item.seed}.txt\n"
        "    deps: [src.txt]\n    outs: ['${item.model}-${item.seed}.txt']\n")
    monkeypatch.chdir(tmp_path)  # targets are read from where `make study` runs, as DVC reads them
    everything = plan([], tmp_path)
    assert everything[0] == "src" and set(everything[1:]) == {f"train@{m}-{s}" for m in "ab" for s in (1, 2)}
    assert plan(["--glob", "train@*-2"], tmp_path) == ["src", "train@a-2", "train@b-2"]  # with what it needs first
    assert plan(["-s", "train@a-1"], tmp_path) == ["train@a-1"]
    subprocess.run(["dvc", "repro", "-q", "--glob", "train@*-1"], cwd=tmp_path, check=True)
    assert plan(["--glob", "train@*-1"], tmp_path) == []
    assert plan(["--glob", "train@*"], tmp_path) == ["train@a-2", "train@b-2"]
    assert plan(["-f", "--glob", "train@*-1"], tmp_path) == ["src", "train@a-1", "train@b-1"]
