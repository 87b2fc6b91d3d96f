"""A running study says which stage of how many it is in and about how long the rest will take."""

from __future__ import annotations

import json
import os

from pipeline.progress import DEFAULT_SECONDS, MIN_EVIDENCE, estimate, expected_seconds, line


def test_unknown_stages_count_as_the_median_of_their_kind():
    times = {"train_gan@a-42": 100.0, "train_gan@b-42": 300.0, "train_gan@c-42": 200.0, "report": 20.0}
    assert expected_seconds(["train_gan@new-42", "report", "prepare"], times) == [200.0, 20.0, DEFAULT_SECONDS]


def test_the_rest_is_scaled_by_how_this_machine_did_so_far():
    plan = ["prepare", "evaluator", "train_gan@a-42", "report"]
    times = {"prepare": 10.0, "evaluator": 90.0, "train_gan@a-42": 400.0, "report": 20.0}
    assert estimate(plan, times, "prepare", 0.0) == (1, 520.0)
    assert estimate(plan, times, "train_gan@a-42", 200.0) == (3, 2 * 420.0)  # twice as slow as the last study
    few = estimate(plan, {**times, "prepare": MIN_EVIDENCE / 2}, "evaluator", 300.0)
    assert few == (2, 510.0)  # too little done to judge this machine by: the last study's times as they are


def test_a_stage_prints_its_place_under_a_plan(tmp_path, monkeypatch):
    plan = tmp_path / "plan"
    plan.write_text("prepare\nevaluator\nreport\n")
    os.utime(plan, (1000.0, 1000.0))  # the study started at t = 1000
    times = tmp_path / "stage_times.json"
    times.write_text(json.dumps({"prepare": 60.0, "evaluator": 3000.0, "report": 600.0}))
    assert line("evaluator", plan, times, now=1120.0) == "[study 2/3, about 2 h 00 min left] evaluator"
    assert line("report", plan, times, now=1000.0 + 3060.0) == "[study 3/3, about 10 min left] report"
    assert line("other", plan, times) is None  # not in the plan
    monkeypatch.delenv("STUDY_PLAN", raising=False)
    assert line("report", None, times) is None  # no plan: a plain `dvc repro` or a test
    assert line("report", plan, tmp_path / "missing.json", now=1000.0) == "[study 3/3, under a minute left] report"
