"""Where a running study is: which stage of how many, and about how long the rest will take.

`make study` writes the plan before `dvc repro` starts: the stages DVC will run, in its order (`dvc repro --dry`),
one per line, in a file whose modification time is the study's start (`STUDY_PLAN` names it). Each stage then
prints one line before its own progress bar: its place in the plan and the time left for the whole study,
estimated from the stage times of the last committed study (`reports/stage_times.json`, which the report writes)
scaled by how this machine has done against them so far. Standard library only: it runs at every stage's start.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

DEFAULT_SECONDS = 10.0  # a stage the last study did not run, of a kind it did not run either
MIN_EVIDENCE = 60.0  # seconds of expected work done before this machine's speed is trusted over the last study's


def _kind(stage: str) -> str:
    return stage.split("@")[0]


def expected_seconds(stages: list[str], times: dict[str, float]) -> list[float]:
    """Each stage's time in the last study; a stage it did not run counts as the median of its kind (train_gan@...),
    or DEFAULT_SECONDS."""
    by_kind: dict[str, list[float]] = {}
    for stage, seconds in times.items():
        by_kind.setdefault(_kind(stage), []).append(seconds)
    return [times.get(s, statistics.median(by_kind[_kind(s)]) if _kind(s) in by_kind else DEFAULT_SECONDS)
            for s in stages]


def estimate(stages: list[str], times: dict[str, float], stage: str, elapsed: float) -> tuple[int, float]:
    """(1-based place of `stage` in the plan, seconds left for it and every later stage). The stages before it
    took `elapsed` seconds here: once they were expected to take MIN_EVIDENCE seconds or more, the rest is scaled
    by the same ratio."""
    place = stages.index(stage)
    expected = expected_seconds(stages, times)
    done = sum(expected[:place])
    scale = elapsed / done if done >= MIN_EVIDENCE else 1.0
    return place + 1, scale * sum(expected[place:])


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return "under a minute"
    return f"about {minutes} min" if minutes < 60 else f"about {minutes // 60} h {minutes % 60:02d} min"


def line(stage: str | None = None, plan: Path | None = None, times_path: Path = Path("reports/stage_times.json"),
         now: float | None = None) -> str | None:
    """`[study 12/45, about 38 min left] train_gan@dcgan-42`, or None outside a planned study (no STUDY_PLAN, or
    a stage the plan does not list)."""
    stage = stage or os.environ.get("DVC_STAGE")
    plan = plan or (Path(p) if (p := os.environ.get("STUDY_PLAN")) else None)
    if not stage or plan is None or not plan.is_file():
        return None
    stages = [s for s in plan.read_text().split() if s]
    if stage not in stages:
        return None
    try:
        times = {k: float(v) for k, v in json.loads(times_path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        times = {}
    place, left = estimate(stages, times, stage, (now or time.time()) - plan.stat().st_mtime)
    return f"[study {place}/{len(stages)}, {_duration(left)} left] {stage}"
