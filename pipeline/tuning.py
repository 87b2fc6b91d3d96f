"""Equal tuning effort: one learning-rate grid, the same for every generator the report ranks (every GAN and ablation,
the diffusion model and the VAE), run as DVC experiments at a selection seed that no reported number uses.

`make sweep` queues one experiment per model and grid value (`queue_commands`: `dvc exp run --queue -n
lr-<model>-<value> -S seeds=[<selection seed>] -S gans.<model>.lr_g=<value> -S gans.<model>.lr_d=<value>
evaluate_gan@<model>-<selection seed>` for a GAN, `-S diffusion.ddpm.lr=<value> evaluate_diffusion@ddpm-<seed>` for
a model with one learning rate: only that model's training and evaluation run, at the first of `SELECTION_SEEDS`;
`-S ++evaluate.scope=selection`: the evaluation computes the numbers the choice reads and skips the analyses only
the report shows), runs the queue (`dvc queue start`), then calls `collect`, which reads each experiment's committed
params and metrics from its git ref and writes `metrics/lr_sweep.json`: the grid, the budget, FID against the
validation split (mean ± std over sample sets: the number the choice is made on; the test split decides nothing),
recall and classes covered per model and value, the best value per model and the value params.yaml uses. It merges
with the cells already there at the same budget (a wider grid adds a column). The study's own runs are never cells:
a cell is a run at a selection seed, and a reported number comes from the reporting `seeds` (the report refuses a
seed in both lists), so the value a model is reported at was not chosen on the number reported. A cell counts only
for the model's current setting: each records a hash of the model's params other than its learning rates, and an
experiment or an earlier cell of another setting (a batch size, EMA or the data's splits changed since the sweep) is
left out and named, so a table never mixes two recipes of one model. The report's *Tuning effort* section shows it.

The rules that read the grid are fixed here, before it runs (`decide`): the best value is the one of lowest
validation FID; a best value at an end of the grid extends it by one step on the 1-3-10 ladder; where the best cell
is not ahead of the runner-up by more than its own sample-set spread, both are rerun at the second selection seed
(experiments `lr-<model>-<value>-s<seed>`) and the mean over the selection seeds decides.

Then the batch-size stage: batch sizes 16, 32 and 64 (`BATCH_GRID`) at each model's best learning rate, experiments
`bs-<model>-<batch>` (the batch size params.yaml uses is the learning-rate grid's cell, the same run). Its cells'
setting leaves the batch size free; the best batch is the lowest validation FID, a close call goes to the second
selection seed as above, and where a batch size other than params.yaml's wins, the rules ask for it to be set and
for the learning rate's two neighbours to be run at it (a cell of the batch-size stage at the batch size in use
counts in the learning-rate grid, so the grid at the new batch has three cells, and its own rules go on from there).

`plan` reads the summary and says what the protocol needs next, cell by cell, and `set_params` writes what it
decided (a batch size that won, then each model's best learning rate) into params.yaml: `make sweep` (`python -m
stages.sweep run`) alternates planning, running the planned cells and collecting until nothing is left, so the whole
protocol is one command and a rerun only runs what is missing.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
from pathlib import Path
from typing import Any

from pipeline import StudyError
from pipeline.config import read_params
from pipeline.io import write_json
from pipeline.models import EVAL_STAGE, MODELS, PARAMS_BLOCK

SELECTION_SEEDS = (7, 8)  # the grid trains at the first, a close call is rerun at the second; the report refuses them
NAME = re.compile(r"^(?P<kind>lr|bs)-(?P<model>[a-z0-9_]+)-(?P<value>[0-9.e-]+?)(?:-s(?P<seed>[0-9]+))?$")
BATCH_GRID = (16, 32, 64)  # the batch-size stage, at the best learning rate
SCOPE = "selection"  # a cell's evaluation: only the numbers its choice reads (the same values as a full one's)


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


LR_KEYS = ("lr_g", "lr_d", "lr")  # a GAN's two learning rates (swept together, lr_g = lr_d), or a model's one


def swept(params: dict) -> dict[str, str]:
    """The models the grid tunes, each with its params block: every GAN, and every generator of the other blocks
    (the diffusion model; among the autoencoders, the VAE), in params.yaml's order."""
    from pipeline.models.base import Generative

    return {m: block for block in PARAMS_BLOCK.values() for m in (params.get(block) or {})
            if block == "gans" or (m in MODELS and issubclass(MODELS[m].build, Generative))}


def lr_keys(block: str) -> tuple[str, ...]:
    """The params keys one grid value sets: a GAN's lr_g and lr_d, another generator's lr."""
    return LR_KEYS[:2] if block == "gans" else LR_KEYS[2:]


def learning_rate(model: str, block: str, model_params: dict) -> str:
    """The learning rate params.yaml gives `model` (its config's default where the block leaves it out)."""
    key = lr_keys(block)[0]
    value = model_params.get(key)
    if value is None and model in MODELS:
        value = getattr(MODELS[model].config(), key)
    return f"{float(value):g}"


def queue_commands(models: dict[str, str], grid: list[float], seed: int, suffix: str = "",
                   batches: dict[str, list[int]] | None = None) -> list[list[str]]:
    """The `dvc exp run --queue` command of each grid cell of `models` (name -> params block), its evaluation stage
    at the selection seed as the target (its training runs with it, nothing else). The learning-rate stage: one
    experiment per value of `grid` (`lr-<model>-<value>`). The batch-size stage (`batches`: model -> batch sizes;
    `grid`: one learning rate per model, in the same order): `bs-<model>-<batch>` at that learning rate."""
    out = []
    for i, (model, block) in enumerate(models.items()):
        stage = EVAL_STAGE[MODELS[model].family]
        cells = ([(f"lr-{model}-{v:g}", v, None) for v in grid] if batches is None else
                 [(f"bs-{model}-{b}", grid[i], b) for b in batches[model]])
        for name, lr, batch in cells:
            sets = [a for key in lr_keys(block) for a in ("-S", f"{block}.{model}.{key}={lr:g}")]
            if batch is not None:
                sets += ["-S", f"{block}.{model}.batch_size={batch}"]
            out.append(["dvc", "exp", "run", "--queue", "-n", f"{name}{suffix}", "-S", f"seeds=[{seed}]", *sets,
                        "-S", f"++evaluate.scope={SCOPE}", f"{stage}@{model}-{seed}"])
    return out


FREE = {"lr": LR_KEYS, "bs": (*LR_KEYS, "batch_size")}  # what a stage's cells may differ in: the rest is the setting


def _recipe(model_params: dict, free: tuple[str, ...] = LR_KEYS) -> dict:
    return {k: v for k, v in model_params.items() if k not in free}


def _setting(model: str, model_params: dict, study_params: dict | None = None, free: tuple[str, ...] = LR_KEYS) -> str:
    """A short hash of a model's params other than the swept ones (`free`: the learning rates; in the batch-size
    stage, the batch size too), defaults filled in by the model's config (so `batch_size: 32` written out and left
    to its default of 32 are one setting); params the model's config no longer accepts are a setting of their own.
    The study-wide blocks a GAN trains and is judged with (`ema`, and `data`: the splits) count too, read from
    `study_params` (params.yaml as a whole) with their defaults."""
    from pipeline.config import DataConfig, EMAConfig

    recipe: Any = _recipe(model_params, free)
    if model in MODELS:
        try:
            recipe = _recipe(MODELS[model].config.model_validate(model_params).model_dump(mode="json"), free)
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
    """What a grid cell keeps of one run's metrics: FID (± its spread over sample sets) against the validation
    split, the number choices are made on, with recall and classes covered."""
    return {"fid": metrics.get("fid_val"), "fid_std": metrics.get("fid_val_std"),
            **{k: metrics.get(k) for k in ("recall", "classes_covered")}, "setting": setting}


def _earlier(out: Path, budget: int | None) -> tuple[dict[str, Any], int | None, str | None]:
    """The cells of the summary already at `out` (an earlier `make sweep`, perhaps on another machine whose
    experiment refs are gone), {"lr": results, "bs": batch cells, "left_out": what it left out}, kept where this
    collection has no experiment for them: widening the grid (`make sweep LR_GRID=0.03`) adds a column instead of
    replacing the table, and a cell left out stays named once its experiment is gone. Cells of another budget are
    dropped (and said so): a grid is only comparable at one budget."""
    if not out.exists():
        return {"lr": {}, "bs": {}, "left_out": []}, budget, None
    try:
        old = json.loads(out.read_text())
        cells = {"lr": old["results"], "bs": old.get("batch", {}), "left_out": list(old.get("left_out", []))}
        old_budget = old["budget_images"]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise StudyError(f"{out}: not a learning-rate sweep summary (move it away to start a new one)") from None
    if budget is not None and old_budget != budget:
        return {"lr": {}, "bs": {}, "left_out": []}, budget, f"{out}: its cells are at a budget of {old_budget} images, not {budget}: dropped"
    return cells, old_budget, None


def _fid(cell: dict) -> float:
    return float("inf") if cell.get("fid") is None else float(cell["fid"])


def _merge(by_seed: dict[int, dict]) -> dict:
    """One grid cell from its runs at one or more selection seeds: the mean of each number over the seeds (the
    sample-set spread averaged too), with the seeds and, with several, each seed's FID."""
    cells = [by_seed[s] for s in sorted(by_seed)]
    if len(cells) == 1:
        return {**cells[0], "seeds": sorted(by_seed)}
    mean = lambda k: (None if any(c.get(k) is None for c in cells)  # noqa: E731
                      else sum(float(c[k]) for c in cells) / len(cells))
    kept = {k: cells[0][k] for k in ("lr",) if k in cells[0]}
    return {"fid": mean("fid"), "fid_std": mean("fid_std"), "recall": mean("recall"),
            "classes_covered": min(c.get("classes_covered") or 0 for c in cells), "setting": cells[0]["setting"],
            **kept, "seeds": sorted(by_seed), "fid_per_seed": [c.get("fid") for c in cells]}


def ladder(value: float, direction: int) -> float:
    """The next value up (+1) or down (-1) on the 1-3-10 ladder the grid uses (0.003 -> 0.01 -> 0.03 -> 0.1)."""
    exponent = math.floor(math.log10(value) + 1e-9)
    low = value / 10 ** exponent < 2  # on the 1 rung of its decade (else the 3 rung)
    if direction > 0:
        return (3 if low else 10) * 10.0 ** exponent
    return (0.3 if low else 1) * 10.0 ** exponent


def decide(cells: dict[str, dict]) -> dict[str, Any]:
    """What the grid of one model says, by the rules fixed before it runs (module doc): `best` (lowest validation
    FID), `extend` (the value one step beyond the grid when the best is at an end of it, else None) and `tie` (the
    best and the runner-up, when the best is not ahead by more than its own sample-set spread and was run at one
    selection seed only: both go to the second selection seed)."""
    values = sorted(cells, key=float)
    best = min(values, key=lambda v: _fid(cells[v]))
    out: dict[str, Any] = {"best": best, "extend": None, "tie": None}
    if len(values) < 2:
        return out
    if best in (values[0], values[-1]):
        out["extend"] = f"{ladder(float(best), 1 if best == values[-1] else -1):g}"
    second = min((v for v in values if v != best), key=lambda v: _fid(cells[v]))
    one_seed = len(cells[best].get("seeds", [])) < 2 or len(cells[second].get("seeds", [])) < 2
    if one_seed and _fid(cells[second]) - _fid(cells[best]) <= float(cells[best].get("fid_std") or 0):
        out["tie"] = [best, second]
    return out


def batch_size(model: str, model_params: dict) -> int | None:
    """The batch size params.yaml gives `model` (its config's default where the block leaves it out)."""
    value = model_params.get("batch_size")
    if value is None and model in MODELS:
        value = MODELS[model].config().batch_size
    return None if value is None else int(value)


def _batch_row(cells: dict[str, dict], lr_cells: dict[str, dict], current: int | None) -> dict[str, dict]:
    """The batch-size stage's row of one model: its `bs-` cells, and at the batch size params.yaml uses the
    learning-rate grid's cell at the same learning rate (the same run: no experiment of its own)."""
    row = dict(cells)
    rates = {c.get("lr") for c in cells.values()}
    if current is not None and len(rates) == 1 and str(current) not in row and rates <= set(lr_cells):
        row[str(current)] = {**lr_cells[next(iter(rates))], "lr": next(iter(rates)), "lr_grid_cell": True}
    return dict(sorted(row.items(), key=lambda kv: int(kv[0])))


def settle(summary: dict, params: dict, metrics_dir: Path, left_out: list[str] | None = None) -> dict[str, Any]:
    """The sweep's summary as the study stands now (the collector's last step, and the report's view of a summary
    collected before the study last changed): cells of another setting than params.yaml's, and cells run at a
    reporting seed (or recording no seed: the protocol before selection seeds), are left out and named; each
    model's best, and what the rules ask next (`decide`), are taken from what is left. The batch-size stage's
    cells (`batch`) are settled the same way, their setting leaving the batch size free; a cell at the batch size
    params.yaml uses is also a cell of the learning-rate grid."""
    left_out = [*(summary.get("left_out") or []), *(left_out or [])]  # what an earlier collect named first
    blocks = swept(params)
    current = {m: _setting(m, params[block][m], params) for m, block in blocks.items()}
    current_bs = {m: _setting(m, params[block][m], params, FREE["bs"]) for m, block in blocks.items()}
    batches = {m: b for m, block in blocks.items() if (b := batch_size(m, params[block][m])) is not None}
    reporting = set(params.get("seeds") or [])

    def valid(model: str, value: str, cell: dict, now: dict, what: str) -> bool:
        if model in now and cell.get("setting", now[model]) != now[model]:
            left_out.append(f"the {what}cell {model} at {value}")
        elif not cell.get("seeds") or reporting & set(cell["seeds"]):
            left_out.append(f"the {what}cell {model} at {value} (run at a reporting seed)")
        else:
            return True
        return False

    def own(model: str, value: str, cell: dict) -> dict | None:
        """A batch-row cell as a cell of the batch-size stage, or None where it is the learning-rate grid's cell at
        the batch size in use (the row shows that one from the grid). A grid cell at a batch size no longer in
        use (the batch changed since) is the stage's cell for that batch: kept, under the stage's setting, where
        its recipe is the current one at that batch size (a summary collected where its experiments are gone)."""
        if not cell.get("lr_grid_cell"):
            return cell
        if model not in blocks or int(value) == batches.get(model):
            return None
        then = _setting(model, {**params[blocks[model]][model], "batch_size": int(value)}, params)
        rest = {k: v for k, v in cell.items() if k != "lr_grid_cell"}
        return rest | {"setting": current_bs[model]} if cell.get("setting") == then else rest

    batch = {m: {v: c for v, c in ((v, own(m, v, c)) for v, c in cells.items())
                 if c is not None and valid(m, v, c, current_bs, "batch-size ")}
             for m, cells in summary.get("batch", {}).items()}
    results: dict[str, dict[str, dict]] = {}
    for model, cells in summary["results"].items():
        for value, cell in cells.items():
            if valid(model, value, cell, current, ""):
                results.setdefault(model, {})[value] = cell
    for model, cells in batch.items():  # a batch-size cell at the batch size in use is a learning-rate cell too
        for value, cell in cells.items():
            if model in batches and int(value) == batches[model] and cell.get("lr") not in results.get(model, {}):
                results.setdefault(model, {})[cell["lr"]] = {k: v for k, v in cell.items() if k != "lr"} | {
                    "setting": current[model]}
    results = {m: dict(sorted(cells.items(), key=lambda kv: float(kv[0]))) for m, cells in sorted(results.items())}
    grid = sorted({float(v) for cells in results.values() for v in cells})
    decided = {m: decide(r) for m, r in results.items()}
    used = {m: learning_rate(m, blocks[m], params[blocks[m]][m]) for m in (*summary["results"], *batch)
            if m in current}
    nxt = {m: {k: d[k] for k in ("extend", "tie") if d[k]} for m, d in decided.items()}
    rows = {m: _batch_row(cells, results.get(m, {}), batches.get(m)) for m, cells in batch.items() if cells}
    batch_best = {}
    for m, row in rows.items():
        if len(row) < 2:
            continue
        d = decide(row)
        batch_best[m] = d["best"]
        if d["tie"]:
            nxt.setdefault(m, {})["batch_tie"] = d["tie"]
        if m in batches and int(d["best"]) != batches[m]:  # the batch changed: the learning rate's neighbours again
            lr = next(iter({c["lr"] for c in row.values()}))
            nxt.setdefault(m, {})["batch"] = {"set": int(d["best"]), "lr_grid": [f"{ladder(float(lr), -1):g}",
                                                                  f"{ladder(float(lr), 1):g}"]}
    out = {**summary, "grid": [f"{v:g}" for v in grid], "results": results,
           "best": {m: d["best"] for m, d in decided.items()}, "used": used,
           "next": {m: todo for m, todo in nxt.items() if todo}}
    for key in ("batch", "batch_best", "batch_used"):
        out.pop(key, None)
    if rows:
        out.update(batch=rows, batch_best=batch_best, batch_used={m: batches[m] for m in rows if m in batches})
    out.pop("dropped", None)
    out.pop("left_out", None)
    left_out = list(dict.fromkeys(left_out))
    if left_out:
        out["left_out"] = left_out
        out["dropped"] = (f"left out, another setting than params.yaml's or a reporting seed's run (rerun `make sweep "
                          f"SWEEP_MODELS=<model>`): {'; '.join(left_out)}")
    return out


def collect(root: Path, out: Path) -> dict[str, Any]:
    refs = experiment_refs(root)
    if not refs:
        raise StudyError("no lr-<model>-<value> or bs-<model>-<batch> experiments here: run `make sweep` first")
    params = read_params((root / "params.yaml").read_text())
    blocks = swept(params)
    runs: dict[str, dict[str, dict[str, dict[int, dict]]]] = {"lr": {}, "bs": {}}  # stage -> model -> value -> seed
    other_batch: dict[str, dict[str, dict[str, dict[int, tuple]]]] = {}  # model -> lr -> batch -> seed -> cell, why
    budget = None
    left_out: list[str] = []
    for name, sha in sorted(refs.items()):
        match = NAME.match(name)
        kind, model, value = match["kind"], match["model"], float(match["value"])
        exp_params = read_params(_git(root, "show", f"{sha}:params.yaml"))
        seed = exp_params["seeds"][0]
        block = blocks.get(model) or next((b for b in PARAMS_BLOCK.values() if model in (exp_params.get(b) or {})),
                                          None)
        if block is None:
            raise StudyError(f"experiment {name}: its params.yaml has no model '{model}'")
        lr = exp_params[block][model]
        rates = {k: lr.get(k) for k in lr_keys(block)}
        if kind == "lr" and any(v is None or float(v) != value for v in rates.values()):
            raise StudyError(f"experiment {name}: params.yaml has "
                             f"{', '.join(f'{k} {v}' for k, v in rates.items())}, not {value:g}")
        if kind == "bs" and (lr.get("batch_size") != int(value) or len({float(v or 0) for v in rates.values()}) != 1):
            raise StudyError(f"experiment {name}: params.yaml has batch_size {lr.get('batch_size')}, not "
                             f"{int(value)}, or {' and '.join(rates)} differ")
        budget = budget or exp_params["budget"]["images"]
        if exp_params["budget"]["images"] != budget:
            raise StudyError(f"experiment {name}: budget {exp_params['budget']['images']} differs from {budget}")
        setting = _setting(model, lr, exp_params, FREE[kind])
        if model in blocks and setting != _setting(model, params[block][model], params, FREE[kind]):
            now = _recipe(params[block][model], FREE[kind])
            keys = sorted(k for k in {*now, *_recipe(lr, FREE[kind])} if now.get(k) != lr.get(k))
            parts = [f"{block}.{model} differs in {', '.join(keys)}"] if keys else []
            parts += [f"{b} differs" for b in ("ema", "data") if params.get(b) != exp_params.get(b)]
            why = f"experiment {name} ({'; '.join(parts) or 'another setting'})"
            free_batch = _setting(model, lr, exp_params, FREE["bs"])
            if kind == "lr" and seed not in (params.get("seeds") or []) and \
                    free_batch == _setting(model, params[block][model], params, FREE["bs"]):
                # only its batch size differs (it changed since): a cell of the batch-size row, if at its rate
                m = json.loads(_git(root, "show", f"{sha}:metrics/{model}-{seed}.json"))
                other = _cell(m, free_batch) | {"lr": f"{value:g}"}
                other_batch.setdefault(model, {}).setdefault(f"{value:g}", {}).setdefault(
                    str(batch_size(model, lr)), {})[seed] = (other, why)
                continue
            left_out.append(why)
            continue
        if seed in (params.get("seeds") or []):
            left_out.append(f"experiment {name} (trained at {seed}, a reporting seed: its number would be both the "
                            f"choice and the result)")
            continue
        m = json.loads(_git(root, "show", f"{sha}:metrics/{model}-{seed}.json"))
        cell = _cell(m, setting) | ({"lr": f"{float(next(iter(rates.values()))):g}"} if kind == "bs" else {})
        runs[kind].setdefault(model, {}).setdefault(f"{value:g}", {})[seed] = cell
    merged = {kind: {model: {value: _merge(by_seed) for value, by_seed in cells.items()}
                     for model, cells in by_model.items()} for kind, by_model in runs.items()}
    for model, by_lr in other_batch.items():  # the learning-rate grid's cells at the batch size used before
        row = merged["bs"].get(model, {})
        rates = {c.get("lr") for c in row.values()}
        for value, by_batch in by_lr.items():
            for batch, by_seed in by_batch.items():
                if rates == {value} and batch not in row:
                    row[batch] = _merge({s: cell for s, (cell, _) in by_seed.items()})
                else:
                    left_out += [why for _, why in by_seed.values()]
    earlier, budget, dropped = _earlier(out, budget)
    for kind in ("lr", "bs"):
        for model, cells in earlier[kind].items():
            for value, cell in cells.items():
                if value not in merged[kind].get(model, {}):
                    merged[kind].setdefault(model, {})[value] = cell
    grid = sorted({float(v) for cells in merged["lr"].values() for v in cells})
    summary = settle({"grid": [f"{v:g}" for v in grid], "budget_images": budget, "results": merged["lr"],
                      "batch": merged["bs"], "left_out": [w for w in earlier["left_out"] if w.split(" (")[0] not in
                                                          {f"experiment {name}" for name in refs}]},
                     params, root / "metrics", left_out)  # an experiment here is judged afresh
    if dropped:
        summary["dropped"] = f"{dropped}; {summary['dropped']}" if "dropped" in summary else dropped
    write_json(out, summary)
    return summary


def record_diverged(out: Path, cell: tuple[str, str, float, int | None, int], params: dict, why: str) -> None:
    """A cell whose training diverged (the loop stopped on a non-finite loss or weight: no model, no metrics) is a
    result of the grid, not a failure to retry: written into the summary at `out` as diverged, with no FID, so it
    loses to every cell that finished and the protocol goes on (the collector keeps it: no experiment replaces it)."""
    kind, model, lr, batch, seed = cell
    if out.is_file():
        summary = json.loads(out.read_text())
    else:
        summary = {"grid": [], "budget_images": params["budget"]["images"], "results": {}}
    block = swept(params)[model]
    entry = {"fid": None, "fid_std": None, "recall": None, "classes_covered": None, "diverged": why,
             "seeds": [seed], "setting": _setting(model, params[block][model], params, FREE[kind])}
    if kind == "lr":
        summary["results"].setdefault(model, {})[f"{lr:g}"] = entry
    else:
        summary.setdefault("batch", {}).setdefault(model, {})[str(batch)] = {**entry, "lr": f"{lr:g}"}
    write_json(out, summary)


def cell_name(kind: str, model: str, value: float, seed: int) -> str:
    """A cell's experiment name: `lr-<model>-<lr>` or `bs-<model>-<batch>`, `-s<seed>` at the second selection
    seed."""
    return f"{kind}-{model}-{value:g}" + ("" if seed == SELECTION_SEEDS[0] else f"-s{seed}")


def plan(summary: dict | None, params: dict, models: list[str], grid: list[float],
         until: str = "batch") -> tuple[list[tuple[str, str, float, int | None, int]], dict[str, dict[str, Any]]]:
    """What the protocol (module doc) asks next of each of `models`, given the sweep's settled summary (None before
    the first cell): the cells to run, each `(kind, model, learning rate, batch size or None, seed)`, and the
    params.yaml values to set, `{model: {key: value}}`. Per model, in order: the learning-rate grid's missing
    values (`grid`; once the batch-size stage has run, its learning rate and that rate's two neighbours at the batch
    size in use), then its extension and its close call at the second selection seed; then (unless `until` is
    "lr") the batch-size stage's cells, its close call, and the batch size that won; and once nothing is left, the
    best learning rate (and nothing of a model that still has cells to run). Empty both ways: the protocol is
    done."""
    first, second = SELECTION_SEEDS
    summary = summary or {}
    blocks = swept(params)
    results, rows, todo_all = summary.get("results", {}), summary.get("batch", {}), summary.get("next", {})
    cells: list[tuple[str, str, float, int | None, int]] = []
    edits: dict[str, dict[str, Any]] = {}
    for m in models:
        block, row, todo = blocks[m], results.get(m, {}), todo_all.get(m, {})
        bs_cells = {b: c for b, c in rows.get(m, {}).items() if not c.get("lr_grid_cell")}
        if bs_cells:  # after the batch-size stage: its learning rate and the neighbours, at the batch in use
            lr0 = float(next(iter(bs_cells.values()))["lr"])
            base = [ladder(lr0, -1), lr0, ladder(lr0, 1)]
        else:
            base = list(grid)
        mine = [("lr", m, v, None, first) for v in base if f"{v:g}" not in row]
        if not mine:
            if todo.get("extend"):
                mine.append(("lr", m, float(todo["extend"]), None, first))
            mine += [("lr", m, float(v), None, second) for v in todo.get("tie") or []
                     if second not in row[v].get("seeds", [])]
        if not mine and until != "lr":
            current = batch_size(m, params[block][m])
            if not bs_cells and current is not None:
                mine = [("bs", m, float(summary["best"][m]), b, first) for b in BATCH_GRID if b != current]
            for b in todo.get("batch_tie") or []:
                c = rows[m][b]
                if second in c.get("seeds", []):
                    continue
                mine.append(("lr", m, float(c["lr"]), None, second) if int(b) == current else
                            ("bs", m, float(c["lr"]), int(b), second))
            if not mine and "batch" in todo:
                edits[m] = {"batch_size": int(todo["batch"]["set"])}
                continue
        cells += mine
        if not mine and m in summary.get("best", {}) and summary["best"][m] != summary.get("used", {}).get(m):
            edits[m] = {k: float(summary["best"][m]) for k in lr_keys(block)}
    return cells, edits


def cell_command(cell: tuple[str, str, float, int | None, int], params: dict) -> list[str]:
    """The `dvc exp run --queue` command of one planned cell."""
    kind, model, lr, batch, seed = cell
    suffix = "" if seed == SELECTION_SEEDS[0] else f"-s{seed}"
    block = {model: swept(params)[model]}
    return queue_commands(block, [lr], seed, suffix, None if kind == "lr" else {model: [batch]})[0]


def _put(mapping: Any, key: str, value: Any) -> None:
    """mapping[key] = value in a ruamel round-trip mapping, keeping the blank line that ended the block after its
    last key (a key new to the block, or one it merged from an anchor, may come last)."""
    import copy

    mapping[key] = value
    own = [k for k in mapping if k in mapping._ok]  # its own keys in written order, not those merged from an anchor
    tail, template = "", None
    for k in own[:-1]:
        token = mapping.ca.items.get(k, [None] * 4)[2]
        if token is not None and token.value.endswith("\n\n"):
            body = token.value.rstrip("\n")
            tail, template = token.value[len(body) + 1:], token
            if body:
                token.value = body + "\n"
            else:  # only the blank line: it moves
                mapping.ca.items[k][2] = None
    if tail:
        entry = mapping.ca.items.setdefault(own[-1], [None] * 4)
        if entry[2] is None:
            entry[2] = copy.copy(template)
            entry[2].value = "\n"
        entry[2].value += tail


def set_params(path: Path, edits: dict[str, dict[str, Any]]) -> list[str]:
    """Write `edits` ({model: {key: value}}) into the model blocks of the params file at `path`, keeping its
    comments, anchors and layout; a model that inherits a value from an edited block (`<<: *stylegan`) keeps its
    own value, written out. Returns one line per value that changed."""
    import io

    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.width, yaml.preserve_quotes = 4096, True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    doc = yaml.load(path.read_text())
    before = read_params(path.read_text())
    blocks = swept(before)
    keys = {k for kv in edits.values() for k in kv}
    want = {m: {k: edits.get(m, {}).get(k, before[b][m].get(k)) for k in keys} for m, b in blocks.items()}
    wrong = {m: dict(kv) for m, kv in edits.items()}
    for _ in range(3):  # an edited anchor moves the models that merge it (`<<: *stylegan`): they get their own
        for m, kv in wrong.items():
            for k, v in kv.items():
                _put(doc[blocks[m]][m], k, v)
        out = io.StringIO()
        yaml.dump(doc, out)
        text = out.getvalue()
        after = read_params(text)
        wrong = {m: bad for m, b in blocks.items()
                 if (bad := {k: v for k, v in want[m].items() if v is not None and after[b][m].get(k) != v})}
        if not wrong:
            break
    else:
        raise StudyError(f"{path}: could not set {', '.join(f'{blocks[m]}.{m}.{k}' for m in wrong for k in wrong[m])}")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return [f"{blocks[m]}.{m}.{k}: {before[blocks[m]][m].get(k)} -> {v}" for m, kv in edits.items()
            for k, v in kv.items() if before[blocks[m]][m].get(k) != v]
