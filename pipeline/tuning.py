"""Equal tuning effort: one learning-rate grid, the same for every GAN and ablation, run as DVC experiments.

`make sweep` queues one experiment per model and grid value (`dvc exp run --queue -n lr-<model>-<value>
-S gans.<model>.lr_g=<value> -S gans.<model>.lr_d=<value>`), runs the queue (`dvc queue start`), then calls
`collect` (through `python -m stages.sweep`), which reads each experiment's committed params and metrics from its
git ref and writes `metrics/lr_sweep.json`: the grid, the budget, FID (mean ± std over sample sets), recall and
classes covered per model and value, the best value per model and the value params.yaml uses. The report's
*Tuning effort* section shows it.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from pipeline import StudyError
from pipeline.config import read_params
from pipeline.io import write_json

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


def collect(root: Path, out: Path) -> dict[str, Any]:
    refs = experiment_refs(root)
    if not refs:
        raise StudyError("no lr-<model>-<value> experiments here: run `make sweep` first")
    params = read_params((root / "params.yaml").read_text())
    results: dict[str, dict[str, dict]] = {}
    grid: set[float] = set()
    budget = None
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
        m = json.loads(_git(root, "show", f"{sha}:metrics/{model}-{seed}.json"))
        results.setdefault(model, {})[f"{value:g}"] = {k: m.get(k) for k in ("fid", "fid_std", "recall", "classes_covered")}
        grid.add(value)
    summary = {
        "grid": [f"{v:g}" for v in sorted(grid)],
        "budget_images": budget,
        "results": results,
        "best": {m: min(r, key=lambda v: r[v]["fid"]) for m, r in results.items()},
        "used": {m: f"{float(params['gans'][m]['lr_g']):g}" for m in results if m in params.get("gans", {})},
    }
    write_json(out, summary)
    return summary
