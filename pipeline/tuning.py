"""Equal tuning effort: one learning-rate grid, the same for every GAN and ablation, run as DVC experiments.

`make sweep` queues one experiment per model and grid value (`dvc exp run --queue -n lr-<model>-<value>
-S gans.<model>.lr_g=<value> -S gans.<model>.lr_d=<value>`), runs the queue (`dvc queue start`), then calls
`collect` (through `python -m stages.sweep`), which reads each experiment's committed params and metrics from its
git ref and writes `metrics/lr_sweep.json`: the grid, the budget, FID against the validation split (mean ± std
over sample sets: the number the choice is made on; the test split decides nothing), recall and
classes covered per model and value, the best value per model and the value params.yaml uses. It merges with the
cells already there at the same budget (a wider grid adds a column), and the cell of the value params.yaml uses
is the study's own committed result (that experiment is the study's run). A cell counts only for the model's
current setting: each records a hash of the model's params other than its learning rates, and an experiment or an
earlier cell of another setting (a batch size, EMA or the data's splits changed since the sweep) is left out and named, so a table
never mixes two recipes of one model. The report's *Tuning effort* section shows it.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from pipeline import StudyError
from pipeline.config import read_params
from pipeline.io import write_json
from pipeline.models import MODELS

NAME = re.compile(r"^lr-(?P<model>[a-z0-9_]+)-(?P<value>[0-9.e-]+)$")


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        raise StudyError(f"git {' '.join(args)}: {result.stderr.strip() or 'failed'}")
    return result.stdout


def experiment_refs(root: Path) -> dict[str, str]:
    """Experiment name -> commit, for the `lr-<model>-<value>` experiments DVC keeps under refs/exps/."""
    refs = {}
    for line in _git(root, "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps/").splitlines():
        sha, ref = line.split(" ", 1)
        name = ref.rsplit("/", 1)[-1]
        if NAME.match(name):
            refs[name] = sha
    return refs


def _recipe(model_params: dict) -> dict:
    return {k: v for k, v in model_params.items() if k not in ("lr_g", "lr_d")}


def _setting(model: str, model_params: dict, study_params: dict | None = None) -> str:
    """A short hash of a model's params other than the swept learning rates, defaults filled in by the model's
    config (so `batch_size: 32` written out and left to its default of 32 are one setting); params the model's
    config no longer accepts are a setting of their own. The study-wide blocks a GAN trains and is judged with
    (`ema`, and `data`: the splits) count too, read from `study_params` (params.yaml as a whole) with their
    defaults."""
    from pipeline.config import DataConfig, EMAConfig

    recipe: Any = _recipe(model_params)
    if model in MODELS:
        try:
            recipe = _recipe(MODELS[model].config.model_validate(model_params).model_dump(mode="json"))
        except ValueError:
            recipe = {"not valid": recipe}
    recipe = {"model": recipe}
    for block, config in (("ema", EMAConfig), ("data", DataConfig)):
        try:
            recipe[block] = config.model_validate((study_params or {}).get(block) or {}).model_dump(mode="json")
        except ValueError:
            recipe[block] = {"not valid": (study_params or {}).get(block)}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _cell(metrics: dict, setting: str) -> dict:
    """What a grid cell keeps of a run's metrics: FID (± its spread over sample sets) against the validation split,
    the number choices are made on, with recall and classes covered."""
    return {"fid": metrics.get("fid_val"), "fid_std": metrics.get("fid_val_std"),
            **{k: metrics.get(k) for k in ("recall", "classes_covered")}, "setting": setting}


def _earlier(out: Path, budget: int | None) -> tuple[dict[str, dict[str, dict]], int | None, str | None]:
    """The cells of the summary already at `out` (an earlier `make sweep`, perhaps on another machine whose
    experiment refs are gone), kept where this collection has no experiment for them: widening the grid
    (`make sweep LR_GRID=0.03`) adds a column instead of replacing the table. Cells of another budget are dropped
    (and said so): a grid is only comparable at one budget."""
    if not out.exists():
        return {}, budget, None
    try:
        old = json.loads(out.read_text())
        results, old_budget = old["results"], old["budget_images"]
    except (ValueError, KeyError, TypeError):
        raise StudyError(f"{out}: not a learning-rate sweep summary (move it away to start a new one)") from None
    if budget is not None and old_budget != budget:
        return {}, budget, f"{out}: its cells are at a budget of {old_budget} images, not {budget}: dropped"
    return results, old_budget, None


def _fid(cell: dict) -> float:
    return float("inf") if cell.get("fid") is None else float(cell["fid"])


def settle(summary: dict, params: dict, metrics_dir: Path, left_out: list[str] | None = None) -> dict[str, Any]:
    """The sweep's summary as the study stands now (the collector's last step, and the report's view of a summary
    collected before the study last changed): cells of another setting than params.yaml's are left out and named,
    the cell of the value params.yaml uses is the study's own result (that experiment is the study's run), and each
    model's best is taken from what is left."""
    left_out = list(left_out or [])
    current = {m: _setting(m, cfg, params) for m, cfg in params.get("gans", {}).items()}
    used = {m: f"{float(params['gans'][m]['lr_g']):g}" for m in summary["results"] if m in current}
    own: dict[str, dict] = {}  # model -> {value: the study's own result}
    for model, value in used.items():
        study = metrics_dir / f"{model}-{params['seeds'][0]}.json"
        if value in summary["grid"] and params["budget"]["images"] == summary["budget_images"] and study.is_file():
            own[model] = {value: _cell(json.loads(study.read_text()), current[model])}
    results: dict[str, dict[str, dict]] = {}
    for model, cells in summary["results"].items():
        for value, cell in cells.items():
            if value in own.get(model, {}):
                continue
            if model in current and cell.get("setting", current[model]) != current[model]:
                left_out.append(f"the cell {model} at {value}")
            else:
                results.setdefault(model, {})[value] = cell
    for model, cell in own.items():
        results.setdefault(model, {}).update(cell)
    results = {m: dict(sorted(cells.items(), key=lambda kv: float(kv[0]))) for m, cells in sorted(results.items())}
    grid = sorted({float(v) for cells in results.values() for v in cells})
    out = {**summary, "grid": [f"{v:g}" for v in grid], "results": results,
           "best": {m: min(r, key=lambda v: _fid(r[v])) for m, r in results.items()}, "used": used}
    out.pop("dropped", None)
    out.pop("left_out", None)
    if left_out:
        out["left_out"] = left_out
        out["dropped"] = (f"left out, another setting than params.yaml's (rerun `make sweep SWEEP_MODELS=<model>`): "
                          f"{'; '.join(left_out)}")
    return out


def collect(root: Path, out: Path) -> dict[str, Any]:
    refs = experiment_refs(root)
    if not refs:
        raise StudyError("no lr-<model>-<value> experiments here: run `make sweep` first")
    params = read_params((root / "params.yaml").read_text())
    current = {m: _setting(m, cfg, params) for m, cfg in params.get("gans", {}).items()}  # of another: left out
    results: dict[str, dict[str, dict]] = {}
    grid: set[float] = set()
    budget = None
    left_out: list[str] = []
    for name, sha in sorted(refs.items()):
        match = NAME.match(name)
        model, value = match["model"], float(match["value"])
        exp_params = read_params(_git(root, "show", f"{sha}:params.yaml"))
        seed = exp_params["seeds"][0]
        lr = exp_params["gans"][model]
        if float(lr["lr_g"]) != value or float(lr["lr_d"]) != value:
            raise StudyError(f"experiment {name}: params.yaml has lr_g {lr['lr_g']}, lr_d {lr['lr_d']}, not {value}")
        budget = budget or exp_params["budget"]["images"]
        if exp_params["budget"]["images"] != budget:
            raise StudyError(f"experiment {name}: budget {exp_params['budget']['images']} differs from {budget}")
        setting = _setting(model, lr, exp_params)
        if model in current and setting != current[model]:
            now = _recipe(params["gans"][model])
            keys = sorted(k for k in {*now, *_recipe(lr)} if now.get(k) != lr.get(k))
            parts = [f"gans.{model} differs in {', '.join(keys)}"] if keys else []
            parts += [f"{b} differs" for b in ("ema", "data") if params.get(b) != exp_params.get(b)]
            left_out.append(f"experiment {name} ({'; '.join(parts) or 'another setting'})")
            continue
        m = json.loads(_git(root, "show", f"{sha}:metrics/{model}-{seed}.json"))
        results.setdefault(model, {})[f"{value:g}"] = _cell(m, setting)
        grid.add(value)
    earlier, budget, dropped = _earlier(out, budget)
    for model, cells in earlier.items():
        for value, cell in cells.items():
            if value not in results.get(model, {}):
                results.setdefault(model, {})[value] = cell
                grid.add(float(value))
    summary = settle({"grid": [f"{v:g}" for v in sorted(grid)], "budget_images": budget, "results": results},
                     params, root / "metrics", left_out)
    if dropped:
        summary["dropped"] = f"{dropped}; {summary['dropped']}" if "dropped" in summary else dropped
    write_json(out, summary)
    return summary
