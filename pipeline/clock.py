"""Where a stage's time goes: one clock per process, read into `profile.json` by every training and evaluation stage.

`since_start()` counts from the process's own start (Linux: /proc; elsewhere from this module's import), so the
profile includes interpreter start-up and imports. Work is charged to a kind with `with CLOCK.phase("setup"):`
or `CLOCK.add("steps", seconds)`; `CLOCK.profile()` gives every kind, the wall time so far and what no phase
claimed ("other").
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Iterator

_IMPORTED = time.perf_counter()


def _process_age() -> float | None:
    """Seconds since this process started, from /proc (None where there is no /proc)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: start time after boot
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


_AGE_AT_IMPORT = _process_age()


def started_at(epoch: float) -> None:
    """Count from `epoch` (seconds since 1970) instead: a stage run by a warm-start worker (stages/warm.py)
    counts from the start of the process that asked for it, as a stage in its own process would."""
    global _AGE_AT_IMPORT, _IMPORTED
    _AGE_AT_IMPORT, _IMPORTED = max(0.0, time.time() - epoch), time.perf_counter()


def since_start() -> float:
    """Seconds since the process started (since this module was imported where that cannot be known)."""
    return (_AGE_AT_IMPORT or 0.0) + time.perf_counter() - _IMPORTED


class StageClock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, kind: str, seconds: float) -> None:
        self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds

    @contextmanager
    def phase(self, kind: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(kind, time.perf_counter() - t0)

    def mark_startup(self) -> None:
        """Everything before the command's own work: interpreter, imports, argument parsing. A command starts a
        fresh account (several commands in one process, as in the tests, each get their own)."""
        self.seconds = {"startup": since_start()}

    def profile(self, extra: dict[str, float] | None = None) -> dict[str, float]:
        """Seconds by kind (this process's phases and `extra`, e.g. a training loop's), the wall time from process
        start, and `other`: the wall time no kind accounts for."""
        kinds = {**self.seconds, **(extra or {})}
        wall = since_start()
        out = {k: round(v, 3) for k, v in kinds.items()}
        out["other"] = round(max(0.0, wall - sum(kinds.values())), 3)
        out["wall"] = round(wall, 3)
        return out


CLOCK = StageClock()
