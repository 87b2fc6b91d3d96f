"""The thresholds the study's code and its prose share, in one place: the report's sentences read them from here,
so a rule stated in the report is the rule the code applied.

- ALPHA, MIN_SEEDS: a difference between two models is claimed only with at least MIN_SEEDS training seeds each,
  where a two-sided Welch t-test over the per-seed values rejects equal means at ALPHA after Holm's correction
  over the family of comparisons (pipeline/report/stats.py).
- `collapsed`: a generator's samples cover fewer than half the classes (each class counted when the evaluator
  assigns it at least `evaluate.coverage_min_share` / K of the samples); the training stage's verdict
  (health.json) and the report's mode-collapse section both use it.
- BLOW_UP: a training loss whose last epoch averages this many times its smallest step value (floored at 1) has
  blown up.

Standard library only: the training stages import it.
"""

from __future__ import annotations

ALPHA = 0.05  # the level of every claim, after Holm's correction
MIN_SEEDS = 3  # training seeds each model needs before the report claims a difference
BLOW_UP = 1000.0  # a loss whose last epoch is this many times its best step (or 1, if larger) has blown up
COLLAPSE = "fewer than half the classes"  # the rule of `collapsed`, in words


def collapsed(classes_covered: int, num_classes: int) -> bool:
    """Whether samples covering `classes_covered` of `num_classes` classes are a mode collapse (fewer than half)."""
    return 2 * classes_covered < num_classes


def most_collapsed(num_classes: int) -> int:
    """The largest number of classes covered that still counts as collapsed (4 of 10)."""
    return (num_classes - 1) // 2
