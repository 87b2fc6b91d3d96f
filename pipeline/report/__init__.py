"""reports/README.md from the metrics files, training histories, arrays and grids (never from MLflow).

Same inputs, same bytes: no timestamps, fixed ordering, PNGs written without metadata. Each section appears
when some model has what it shows (a sparsity section for models that report activations, ...): sections
look at the metrics a model produced, never at its name.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import StudyError
from pipeline.config import StudyConfig
from pipeline.io import atomic_dir, read_json
from pipeline.models import MODELS


@dataclass
class Study:
    cfg: StudyConfig
    manifest: dict
    evaluator: dict
    metrics: dict[str, dict]  # per model: metrics/<m>.json, plus timing and epoch count
    histories: dict[str, list[dict]]  # per model: runs/<m>/train/history.json
    curves: dict[str, list[dict]]  # per generative model: runs/<m>/train/curve.json (FID etc. over the budget)
    arrays: dict[str, dict[str, list]]  # per model: runs/<m>/eval/arrays.json (may be empty)
    figures: Path  # where figures are written
    runs: Path  # runs/: the per-epoch grids of training

    def family(self, family: str) -> list[str]:
        return [n for n in self.metrics if MODELS[n].family == family]

    def having(self, key: str, family: str | None = None) -> list[str]:
        """Models whose metrics hold `key` (in study order)."""
        return [n for n, m in self.metrics.items() if key in m and (family is None or MODELS[n].family == family)]


def _load(path: Path, what: str) -> Any:
    if not path.is_file():
        raise StudyError(f"{path}: missing ({what}); run `dvc repro` first")
    return read_json(path)


def load_study(cfg: StudyConfig, metrics_dir: Path, runs_dir: Path, manifest_path: Path, figures: Path) -> Study:
    names = list(cfg.models())
    metrics = {n: _load(metrics_dir / f"{n}.json", f"evaluate stage of {n}") for n in names}
    histories = {n: _load(runs_dir / n / "train" / "history.json", f"train stage of {n}") for n in names}
    for n in names:
        metrics[n].update(_load(runs_dir / n / "train" / "timing.json", f"train stage of {n}"), epochs=len(histories[n]))
    arrays = {n: read_json(p) if (p := runs_dir / n / "eval" / "arrays.json").is_file() else {} for n in names}
    curves = {n: read_json(p) for n in names if (p := runs_dir / n / "train" / "curve.json").is_file()}
    return Study(cfg, _load(manifest_path, "the prepare stage's manifest"),
                 _load(metrics_dir / "evaluator.json", "the evaluator stage's metrics"), metrics, histories, curves,
                 arrays, figures, runs_dir)


def write_report(cfg: StudyConfig, metrics_dir: Path, runs_dir: Path, out_dir: Path,
                 manifest_path: Path = Path("data/prepared/manifest.json")) -> Path:
    from pipeline.report.sections import SECTIONS

    with atomic_dir(out_dir) as tmp:
        study = load_study(cfg, metrics_dir, runs_dir, manifest_path, tmp / "figures")
        study.figures.mkdir()
        for n in study.metrics:
            for grid in sorted((runs_dir / n / "eval").glob("*.png")):
                shutil.copyfile(grid, study.figures / f"{n}_{grid.name}")
        parts = [section(study) for section in SECTIONS]
        (tmp / "README.md").write_text("\n".join(p for p in parts if p).rstrip() + "\n")
    return out_dir / "README.md"
