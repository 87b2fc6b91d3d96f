"""Where a running study is: which stage of how many, and about how long the rest will take.

`make study` (stages/study.py) plans the stages `dvc repro` will run, in DVC's order, runs it, and as each stage
starts prints how many stages have started and the time left for the whole study: the stage times of the last committed
study (`reports/stage_times.json`, which the report writes) scaled by how this machine has done against them so
far. No stage imports this module: how a study reports its progress changes no result.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

DEFAULT_SECONDS = 10.0  # a stage the last study did not run, of a kind it did not run either
MIN_EVIDENCE = 60.0  # seconds of expected work done before this machine's speed is trusted over the last study's
TIMES = Path("reports/stage_times.json")


def _kind(stage: str) -> str:
    return stage.split("@")[0]


def _unseeded(stage: str) -> str:
    """train_gan@dcgan-42 -> train_gan@dcgan: the same stage at any training seed."""
    head, at, item = stage.partition("@")
    model, dash, seed = item.rpartition("-")
    return f"{head}@{model}" if at and dash and seed.isdigit() else stage


def expected_seconds(stages: list[str], times: dict[str, float]) -> list[float]:
    """Each stage's time in the last study; a stage it ran only at other seeds counts as their mean; one it did not
    run at all, as the median of its kind (train_gan@...), or DEFAULT_SECONDS."""
    by_kind: dict[str, list[float]] = {}
    by_stage: dict[str, list[float]] = {}
    for stage, seconds in times.items():
        by_kind.setdefault(_kind(stage), []).append(seconds)
        by_stage.setdefault(_unseeded(stage), []).append(seconds)

    def guess(stage: str) -> float:
        if stage in times:
            return times[stage]
        if _unseeded(stage) in by_stage:
            return statistics.mean(by_stage[_unseeded(stage)])
        return statistics.median(by_kind[_kind(stage)]) if _kind(stage) in by_kind else DEFAULT_SECONDS

    return [guess(s) for s in stages]


def estimate(stages: list[str], times: dict[str, float], started: list[str], elapsed: float) -> tuple[int, float]:
    """(1-based place of the stage starting now, the last of `started`, seconds left for it and every planned stage
    not started yet). `dvc repro` need not run the planned stages in the plan's order (its process walks its own
    copy of the stage graph), so the place counts the stages started so far, and what is left is the plan less
    them. Those before took `elapsed` seconds here: once they were expected to take MIN_EVIDENCE seconds or more
    (or at once, with no times of a last study), the rest is scaled by the same ratio."""
    expected = dict(zip(stages, expected_seconds(stages, times)))
    before = set(started[:-1])
    done = sum(expected.get(s, 0.0) for s in before)
    scale = elapsed / done if done >= MIN_EVIDENCE or (done and not times) else 1.0
    return len(started), scale * sum(seconds for s, seconds in expected.items() if s not in before)


def read_times(path: Path = TIMES) -> dict[str, float]:
    """The last study's stage times; none when it has no such file (or an unreadable one)."""
    try:
        return {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return "under a minute"
    return f"about {minutes} min" if minutes < 60 else f"about {minutes // 60} h {minutes % 60:02d} min"


def estimate_jobs(stages: list[str], times: dict[str, float], started: list[str], finished: list[str], elapsed: float,
                  jobs: int) -> tuple[int, float]:
    """`estimate` for `jobs` stages at once: (place of the stage starting now, seconds left). The stages not finished
    (those in flight counted whole) share `jobs` workers; once the finished ones were expected to take MIN_EVIDENCE
    seconds or more (or at once, with no times of a last study), the elapsed time over their share scales the
    rest."""
    expected = dict(zip(stages, expected_seconds(stages, times)))
    done = sum(expected.get(s, 0.0) for s in finished)
    scale = elapsed / (done / jobs) if done >= MIN_EVIDENCE or (done and not times) else 1.0
    return len(started), scale * sum(seconds for s, seconds in expected.items() if s not in finished) / jobs


def line(stages: list[str], times: dict[str, float], started: list[str], elapsed: float,
         finished: list[str] | None = None, jobs: int = 1, running: int = 1) -> str:
    """`[study 12/44, about 38 min left] train_gan@dcgan-42`: the last of `started` is the stage starting now. With
    `jobs` > 1 (`finished`: the stages done so far), `[study 12/44, 2 running, about 20 min left] ...`."""
    if jobs == 1:
        place, left = estimate(stages, times, started, elapsed)
        return f"[study {place}/{len(stages)}, {_duration(left)} left] {started[-1]}"
    place, left = estimate_jobs(stages, times, started, finished or [], elapsed, jobs)
    return f"[study {place}/{len(stages)}, {running} running, {_duration(left)} left] {started[-1]}"
