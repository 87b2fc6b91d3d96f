"""The report's one test for "X beats Y": a two-sided Welch t-test over training seeds, Holm-corrected per family.

A claim compares the per-seed values of two models (each seed's mean over its sample sets): the sample-set
spread measures sampling noise only, and another training seed moves a model's FID far more. With fewer than
`MIN_SEEDS` seeds no claim is made (the report ranks and says so). Each family of claims (the ranking's
neighbours, an ablation's rows against its reference, one model against the others) is corrected together by
Holm's step-down method, and the list of comparisons is fixed by the code, not chosen from the results.
A bootstrap over three seeds has too few distinct resamples to be a test; Welch's t does not assume equal
variances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from scipy import stats

from pipeline.rules import ALPHA, MIN_SEEDS  # noqa: F401  (the report reads them from here too)



@dataclass(frozen=True)
class Comparison:
    """a against b on one metric: the difference of the seed means (a - b) with its 95 % interval, Welch's p and
    the family's Holm-adjusted p."""

    a: str
    b: str
    diff: float
    low: float
    high: float
    p: float
    p_holm: float

    @property
    def separated(self) -> bool:
        return self.p_holm < ALPHA

    def describe(self, key: str = "FID") -> str:
        """'FID difference -12.3 (95 % CI -20.1 to -4.5), p = 0.004, Holm 0.012' (three significant digits)"""
        return (f"{key} difference {self.diff:+.3g} (95 % CI {self.low:+.3g} to {self.high:+.3g}), "
                f"p {_p(self.p)}, Holm {_p(self.p_holm)}").strip()


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else f"= {p:.2g}" if p >= 0.001 else "< 0.001"


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float, float]:
    """(mean a - mean b, 95 % interval low, high, two-sided p) of Welch's t-test. Two constant samples give p = 0
    when they differ and 1 when they are equal (the t statistic is undefined there)."""
    diff = sum(a) / len(a) - sum(b) / len(b)
    if len(set(a)) == 1 and len(set(b)) == 1:
        return diff, diff, diff, 0.0 if diff else 1.0
    result = stats.ttest_ind(list(a), list(b), equal_var=False)
    interval = result.confidence_interval(0.95)
    return diff, float(interval.low), float(interval.high), float(result.pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (the same order as given): the i-th smallest of m is multiplied by
    m - i, and the adjusted values are made non-decreasing in that order, capped at 1."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [1.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def family(values: dict[str, Sequence[float]], pairs: Sequence[tuple[str, str]]) -> list[Comparison] | None:
    """One family of claims: Welch's test for each pair (a, b) of `values` (per-seed values by model), Holm's
    correction over them all. None when a model has fewer than MIN_SEEDS values: no claim can be made."""
    if any(len(values[n]) < MIN_SEEDS for pair in pairs for n in pair):
        return None
    tests = [welch(values[a], values[b]) for a, b in pairs]
    adjusted = holm([t[3] for t in tests])
    return [Comparison(a, b, *t, p_holm=q) for (a, b), t, q in zip(pairs, tests, adjusted)]
