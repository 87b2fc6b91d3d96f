"""Sentences of the report computed from the numbers: they change when the numbers do."""

from __future__ import annotations

from types import SimpleNamespace

from pipeline.report.sections import tuning


def _study(results: dict, used: dict) -> SimpleNamespace:
    best = {m: min(r, key=lambda v: r[v]["fid"]) for m, r in results.items()}
    t = {"grid": ["0.001", "0.003", "0.01"], "budget_images": 64000, "results": results, "best": best, "used": used}
    return SimpleNamespace(tuning=t, family=lambda family: list(results))


def _cell(fid: float, std: float, classes: int = 10) -> dict:
    return {"fid": fid, "fid_std": std, "recall": 0.5, "classes_covered": classes}


def test_tuning_effort_names_edge_optima_close_calls_and_models_off_their_best():
    results = {"a": {"0.001": _cell(300, 5), "0.003": _cell(200, 5), "0.01": _cell(150, 5)},  # best at the edge
               "b": {"0.001": _cell(300, 5), "0.003": _cell(200, 6), "0.01": _cell(205, 6)}}  # 200 vs 205: close
    text = tuning(_study(results, {"a": "0.01", "b": "0.001"}))
    assert "| a | 300 ± 5 (10) | 200 ± 5 (10) | 150 ± 5 (10) | 0.01 | 0.01 | yes |" in text
    assert "| b | 300 ± 5 (10) | 200 ± 6 (10) | 205 ± 6 (10) | 0.003 | 0.001 | no |" in text
    assert "not at their own best value of the grid: `b`." in text
    assert "Best at an end of the grid, so the optimum may lie beyond it: `a`." in text
    assert "runner-up by less than both sample-set spreads (the grid does not separate them in this seed): " \
           "`b` (0.003 against 0.01)." in text

    results["b"]["0.01"] = _cell(240, 6)  # now clearly behind, and a missing cell
    del results["a"]["0.001"]
    text = tuning(_study(results, {"a": "0.01", "b": "0.003"}))
    assert "| a | – | 200 ± 5 (10) |" in text and "own best value of the grid: none." in text
    assert "Every model's best value is ahead of its runner-up beyond both sample-set spreads." in text
