"""reports/README.md from the metrics files, training histories, arrays and grids (never from MLflow).

The study's numbers are loaded once into one tidy table (`Study.results`: model, seed, sample set, metric, value;
written beside the report as results.csv); the means, seed spreads and per-seed values the sections read are
groupbys over it. Same inputs, same bytes: no timestamps, fixed ordering, PNGs written without metadata. Each
section appears when some model has what it shows (a sparsity section for models that report activations, ...):
sections look at the metrics a model produced, never at its name.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import StudyError
from pipeline.config import StudyConfig
from pipeline.io import atomic_dir, atomic_path, read_json, write_json
from pipeline.models import EVAL_STAGE, MODELS, PARAMS_BLOCK, TRAIN_STAGE, run_name


@dataclass
class Study:
    cfg: StudyConfig
    manifest: dict
    evaluator: dict
    metrics: dict[str, dict]  # per model: metrics/<m>-<seed>.json with timing, averaged over the seeds
    histories: dict[str, list[dict]]  # per model: runs/<m>-<first seed>/train/history.json
    curves: dict[str, list[dict]]  # per generative model: runs/<m>-<first seed>/train/curve.json
    arrays: dict[str, dict[str, list]]  # per model: runs/<m>-<first seed>/figures/arrays.json (may be empty)
    figures: Path  # where figures are written
    runs: Path  # runs/: each run's records (in git) and, for the first seed, its grids and arrays
    by_seed: dict[str, dict[int, dict]]  # per model and seed: that run's metrics and timing
    results: pd.DataFrame  # every number of by_seed, one row each: model, seed, sample_set, metric, value
    tuning: dict | None = None  # metrics/lr_sweep.json (`make sweep`) as the study stands now, when there is one

    @property
    def seeds(self) -> list[int]:
        return list(self.cfg.seeds)

    def run_dir(self, name: str) -> Path:
        """runs/<model>-<first seed>: the run whose curves and pictures the report shows."""
        return self.runs / run_name(name, self.seeds[0])

    def family(self, family: str) -> list[str]:
        return [n for n in self.metrics if MODELS[n].family == family]

    def having(self, key: str, family: str | None = None) -> list[str]:
        """Models whose metrics hold `key` (in study order)."""
        return [n for n, m in self.metrics.items() if key in m and (family is None or MODELS[n].family == family)]


def _load(path: Path, what: str) -> Any:
    if not path.is_file():
        raise StudyError(f"{path}: missing ({what}); run `dvc repro` first")
    return read_json(path)


RESULTS = ["model", "seed", "sample_set", "metric", "value"]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def tidy(by_seed: dict[str, dict[int, dict]]) -> pd.DataFrame:
    """Every number of the study, one row each (columns `RESULTS`), in study, seed and metric order. A metric
    measured on several disjoint sample sets (`<metric>_sets`) gives one row per set beside the run's own row (its
    mean over the sets, sample_set NA); text, flags and nested records are not numbers and have no row."""
    rows = []
    for name, runs in by_seed.items():
        for seed, m in runs.items():
            for key in sorted(m):
                value = m[key]
                if key.endswith("_sets") and isinstance(value, list):
                    rows += [(name, seed, i, key.removesuffix("_sets"), v) for i, v in enumerate(value)]
                elif _number(value):
                    rows.append((name, seed, None, key, value))
    return pd.DataFrame(rows, columns=RESULTS).astype({"seed": "int64", "sample_set": "Int64", "value": "float64"})


def seed_stats(results: pd.DataFrame) -> pd.DataFrame:
    """Per (model, metric), over the training seeds, from the runs' own rows: `mean`, `std` (ddof=1), `per_seed`
    (the values in seed order) and `seeds` (how many runs have the number). A NaN in any seed makes the mean and
    spread NaN."""
    whole = results[results["sample_set"].isna()]
    stats = whole.groupby(["model", "metric"], sort=False)["value"].agg(
        mean="mean", std="std", per_seed=list, seeds="size", measured="count")
    stats[["mean", "std"]] = stats[["mean", "std"]].where(stats["measured"] == stats["seeds"])
    return stats.drop(columns="measured")


def over_seeds(runs: list[dict], stats: pd.DataFrame | None = None) -> dict:
    """One model's metrics over its seeds: the first run's values, with every number present in all runs replaced
    by its mean (one the same in every run, a setting or a size, keeps its value and type) and given
    `<key>_seed_std` and `<key>_per_seed`. Where there are several seeds, `<key>_std` (the spread over sample sets
    within a run) becomes the spread over seeds, the one that counts. `stats`: the model's rows of `seed_stats`,
    indexed by metric (computed from `runs` when not given)."""
    out = dict(runs[0])
    if "health" in out:  # the worst ending over the seeds
        worst = max(runs, key=lambda r: HEALTH.index(r.get("health", "ok")))
        out["health"], out["health_reason"] = worst.get("health", "ok"), worst.get("health_reason", "")
    if len(runs) == 1:
        return out
    if stats is None:
        stats = seed_stats(tidy({"": dict(enumerate(runs))})).droplevel("model")
    for k, v in runs[0].items():
        if _number(v) and k in stats.index and stats.at[k, "seeds"] == len(runs):
            mean, std, values = stats.loc[k, ["mean", "std", "per_seed"]]
            same = all(r[k] == v for r in runs)  # a setting or a size (code size, parameters) keeps its own type
            out[k], out[f"{k}_seed_std"], out[f"{k}_per_seed"] = v if same else float(mean), float(std), list(values)
    for k in [k for k in out if k.endswith("_seed_std")]:
        base = k.removesuffix("_seed_std")
        if f"{base}_std" in runs[0]:
            out[f"{base}_sets_std"], out[f"{base}_std"] = out[f"{base}_std"], out[k]
    return out


HEALTH = ("ok", "collapsed", "blew_up")  # worst last


def _stage_profiles(run_dir: Path) -> dict:
    """Where a model's two stages spent their time (profile.json of train and eval: `train_profile`,
    `eval_profile`, with `train_wall` / `eval_wall` as numbers the seeds average), how long its sampling takes
    (eval/timing.json: `sample_seconds_per_1000`, a diffusion model's `sweep_seconds_per_1000`) and how its
    training ended (`health`, from health.json). Runs made before these files existed simply lack them."""
    out: dict = {}
    if (p := run_dir / "eval" / "timing.json").is_file():  # sampling time per 1,000 images (generative models)
        out.update(read_json(p))
    for stage in ("train", "eval"):
        if (p := run_dir / stage / "profile.json").is_file():
            out[f"{stage}_profile"] = read_json(p)
            out[f"{stage}_wall"] = out[f"{stage}_profile"]["wall"]
    if (p := run_dir / "train" / "health.json").is_file():
        found = read_json(p)
        out["health"], out["health_reason"] = found["status"], found["reason"]
    return out


def _tuning(cfg: StudyConfig, metrics_dir: Path) -> dict | None:
    """The sweep's summary with the study's own run in its cell and the cells of another recipe left out, even when
    the study changed after `make sweep` collected it."""
    from pipeline.tuning import settle

    path = metrics_dir / "lr_sweep.json"
    if not path.is_file():
        return None
    params = {"seeds": cfg.seeds, "budget": {"images": cfg.budget.images}, "ema": cfg.ema.model_dump(mode="json"),
              "data": cfg.data.model_dump(mode="json"),
              **{block: {m: c.model_dump(mode="json") for m, c in getattr(cfg, block).entries().items()}
                 for block in PARAMS_BLOCK.values()}}
    try:
        return settle(read_json(path), params, metrics_dir)
    except (KeyError, TypeError, AttributeError, ValueError):
        raise StudyError(f"{path}: not a learning-rate sweep summary (`make sweep` writes one)") from None


def load_study(cfg: StudyConfig, metrics_dir: Path, runs_dir: Path, manifest_path: Path, figures: Path,
               evaluator_path: Path = Path("models/evaluator.pt")) -> Study:
    from pipeline.tuning import SELECTION_SEEDS

    shared = sorted(set(cfg.seeds) & set(SELECTION_SEEDS))
    if shared:
        raise StudyError(f"seeds: {shared} also selection seeds (pipeline/tuning.py's SELECTION_SEEDS, what "
                         f"`make sweep` tunes at): a run a choice was made on would be reported; use other seeds")
    names, first = list(cfg.models()), cfg.seeds[0]
    by_seed: dict[str, dict[int, dict]] = {}
    for n in names:
        by_seed[n] = {}
        for seed in cfg.seeds:
            run = run_name(n, seed)
            m = _load(metrics_dir / f"{run}.json", f"evaluate stage of {run}")
            history = _load(runs_dir / run / "train" / "history.json", f"train stage of {run}")
            by_seed[n][seed] = {**m, **_load(runs_dir / run / "train" / "timing.json", f"train stage of {run}"),
                                "epochs": len(history), **_stage_profiles(runs_dir / run)}
    results = tidy(by_seed)
    stats = {n: rows.droplevel("model") for n, rows in seed_stats(results).groupby(level="model", sort=False)}
    metrics = {n: over_seeds([by_seed[n][s] for s in cfg.seeds], stats.get(n)) for n in names}
    histories = {n: read_json(runs_dir / run_name(n, first) / "train" / "history.json") for n in names}
    arrays = {n: read_json(p) if (p := runs_dir / run_name(n, first) / "figures" / "arrays.json").is_file() else {}
              for n in names}
    curves = {n: read_json(p) for n in names if (p := runs_dir / run_name(n, first) / "train" / "curve.json").is_file()}
    evaluator = _load(metrics_dir / "evaluator.json", "the evaluator stage's metrics")
    if evaluator_path.is_file():  # the one ruler (frozen in dvc.yaml): the report names the weights it measured with
        import hashlib

        evaluator = {**evaluator, "weights_sha256": hashlib.sha256(evaluator_path.read_bytes()).hexdigest()}
    return Study(cfg, _load(manifest_path, "the prepare stage's manifest"), evaluator, metrics, histories, curves,
                 arrays, figures, runs_dir, by_seed, results, _tuning(cfg, metrics_dir))


# The numbers each model's row of the report leads with: what `dvc exp show` and `dvc metrics diff` compare.
HEADLINE = {"generative": ("fid", "recall"), "autoencoder": ("test_mse", "probe_accuracy")}


def headline(study: Study) -> dict:
    """{model: {metric: value, metric_std: spread}}: a generative model (it has an FID) by FID and recall, any other
    autoencoder by test MSE and linear-probe accuracy; `_std` is the spread the report uses (over seeds when there
    are several, else over sample sets), where the study has one. Their columns in `dvc exp show` are
    `<model>.<metric>` (`dcgan.fid`): short, and one regex away from the hundreds of other metrics (`make compare`)."""
    out: dict[str, dict[str, float]] = {}
    for name, m in study.metrics.items():
        keys = HEADLINE["generative" if "fid" in m else "autoencoder"]
        row: dict[str, float] = {}
        for k in keys:
            if isinstance(m.get(k), (int, float)):
                row[k] = round(float(m[k]), 6)
                spread = m.get(f"{k}_std", m.get(f"{k}_seed_std"))
                if isinstance(spread, (int, float)):
                    row[f"{k}_std"] = round(float(spread), 6)
        out[name] = row
    return out


def write_results(study: Study, path: Path) -> None:
    """`Study.results` as CSV: every number of the study in one tidy table (model, seed, sample_set empty for a
    number of the whole run, metric, value). `pandas.read_csv("reports/results.csv")` loads it in one line."""
    study.results.to_csv(path, index=False)


def stage_times(study: Study, runs_dir: Path) -> dict[str, float]:
    """Wall seconds of each stage of this study, by DVC stage name (train_gan@dcgan-42), as their profile.json
    files recorded them: what the next `make study` estimates its time left from (pipeline.progress). The report
    is not timed here, so that the same inputs give the same bytes."""
    times: dict[str, float] = {}
    if (p := runs_dir / "evaluator" / "profile.json").is_file():
        times["evaluator"] = read_json(p)["wall"]
    for n, runs in study.by_seed.items():
        family = MODELS[n].family
        for seed, m in runs.items():
            for stage, key in ((TRAIN_STAGE[family], "train_wall"), (EVAL_STAGE[family], "eval_wall")):
                if key in m:
                    times[f"{stage}@{run_name(n, seed)}"] = m[key]
    return times


def write_report(cfg: StudyConfig, metrics_dir: Path, runs_dir: Path, out_dir: Path,
                 manifest_path: Path = Path("data/prepared/manifest.json")) -> Path:
    """`out_dir`/README.md, `out_dir`/figures/, `out_dir`/headline.json, `out_dir`/results.csv and
    `out_dir`/stage_times.json, replaced
    only when the whole report was written (anything else in `out_dir`, such as the committed three-seed report, is
    left alone)."""
    from pipeline.report.sections import SECTIONS

    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_dir(out_dir / "figures") as figures, atomic_path(out_dir / "README.md") as readme, \
                atomic_path(out_dir / "headline.json") as headline_json, \
                atomic_path(out_dir / "stage_times.json") as times_json, \
                atomic_path(out_dir / "results.csv") as results_csv:
            study = load_study(cfg, metrics_dir, runs_dir, manifest_path, figures)
            write_json(headline_json, headline(study))
            write_results(study, results_csv)
            for n in study.metrics:
                for grid in sorted((study.run_dir(n) / "figures").glob("*.png")):
                    shutil.copyfile(grid, study.figures / f"{n}_{grid.name}")
            parts = [section(study) for section in SECTIONS]
            readme.write_text("\n".join(p for p in parts if p).rstrip() + "\n")
            write_json(times_json, stage_times(study, runs_dir))
    except BaseException:
        if created:  # no empty folder left behind as if a report had been written
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return out_dir / "README.md"
