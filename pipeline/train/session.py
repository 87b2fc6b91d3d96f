"""One training run of one model: set-up and wrap-up that both family loops share.

The family loops (`autoencoder.py`, `gan.py`) differ only in what a step and an epoch end do; everything
else (seeding, device, the budget, the curve points, the tracking run, grids, the final model file, history,
curve and timing, discarding the checkpoint) happens here, once.

A generative model (the VAE, every GAN) trains for the study's `budget.images` and, given a judge (the
evaluator's metrics), is measured at `budget.curve_points` evenly spaced points of it: `curve.json` holds FID,
precision, recall and coverage against images seen and training seconds.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pipeline.code import code_hash, command_files
from pipeline.config import StudyConfig, config_dump
from pipeline.data import Dataset
from pipeline.io import write_json
from pipeline.models import TRAIN_STAGE, build, run_name, spec
from pipeline.models.base import Generative
from pipeline.tracking import NullTracker, run_tags
from pipeline.train.common import fingerprint, grid, resolve_device, save_grid, save_model, seed_everything
from pipeline.train.loop import Loop


@dataclass(frozen=True)
class TrainPaths:
    model: Path  # models/<name>.pt: the trained model (written last, atomically)
    run_dir: Path  # runs/<name>/train: history.json, timing.json, grids/
    checkpoint: Path  # checkpoints/<name>.ckpt: resume point, deleted when training completes

    @classmethod
    def for_model(cls, name: str, root: Path = Path(".")) -> "TrainPaths":
        return cls(root / "models" / f"{name}.pt", root / "runs" / name / "train", root / "checkpoints" / f"{name}.ckpt")


class Session:
    def __init__(self, name: str, cfg: StudyConfig, data: Dataset, paths: TrainPaths, tracker=None,
                 root: Path = Path("."), judge=None):
        self.name, self.cfg, self.data, self.paths = name, cfg, data, paths
        self.judge = judge  # pipeline.evaluate.metrics.Judge: scores a generative model at each curve point
        self.tracker = tracker or NullTracker()
        self.root = root
        self.spec = spec(name)
        self.mcfg = cfg.model(name)
        seed_everything(cfg.seed)
        self.device = resolve_device(cfg.device)
        self.model: nn.Module = build(name, self.mcfg, data.shape).to(self.device)
        self.stage = f"{TRAIN_STAGE[self.spec.family]}@{run_name(name, cfg.seed)}"
        self.params: dict[str, Any] = {
            "model": name, "family": self.spec.family, "seed": cfg.seed, "device": str(self.device),
            "config": config_dump(self.mcfg), "data": config_dump(cfg.data), "train": config_dump(cfg.train),
        }
        self.generative = isinstance(self.model, Generative)
        if self.generative:
            self.params["budget"] = config_dump(cfg.budget)
        budget = [config_dump(cfg.budget), config_dump(cfg.evaluate), config_dump(cfg.evaluator)] if self.generative else []
        code = code_hash(command_files(TRAIN_STAGE[self.spec.family]))  # a checkpoint of other code is not resumed
        self.fingerprint = fingerprint(name, config_dump(self.mcfg), cfg.seed, data.manifest["sha256"], budget, code)

    def loop(self, optimizers: dict[str, torch.optim.Optimizer], batch_size: int, epochs: int | None = None) -> Loop:
        """The driver: `epochs` for an autoencoder that has them, the study's budget for a generative model."""
        images = self.cfg.budget.images if self.generative else None
        loop = Loop({"model": self.model}, optimizers, epochs=None if images else epochs, images=images,
                    batch_size=batch_size, seed=self.cfg.seed, checkpoint=self.paths.checkpoint,
                    checkpoint_every=self.cfg.train.checkpoint_every, fingerprint=self.fingerprint, desc=self.name)
        if not loop.restore():
            self.fresh_run_dir()
        return loop

    def fresh_run_dir(self) -> None:
        """A fresh start leaves no stale grids from an earlier configuration."""
        shutil.rmtree(self.paths.run_dir, ignore_errors=True)
        self.paths.run_dir.mkdir(parents=True)

    def run(self, run_id: str | None = None):
        return self.tracker.run(self.stage, run_id=run_id, tags=run_tags(self.root, self.stage, self.name, self.cfg.seed),
                                params=self.params)

    def grid(self, images: Tensor, key: str, epoch: int) -> None:
        """Save a per-epoch grid under grids/ and send it to the tracker as an evolving image."""
        image = grid(images)
        save_grid(image, self.paths.run_dir / "grids" / f"{key}_{epoch:03d}.png")
        self.tracker.log_image(image, key=key, step=epoch)

    def fit(self, loop: Loop, x: Tensor, y: Tensor, step, end_epoch, example: Tensor,
            max_steps: int | None = None, before_finish=lambda: None, on_epoch_start=lambda epoch: None,
            summary=lambda history: {}) -> bool:
        """Run the family's step/end_epoch through the loop inside the tracking run, then finish.

        `summary(history)` gives what the model file keeps of the history besides the epoch count."""
        judge = self.judge if self.generative else None
        with self.run(loop.state.run_id) as run_id:
            loop.state.run_id = run_id
            self.model.train()
            if not loop.run(x, y, step, end_epoch, lambda row: self.tracker.log_metrics(row, row["epoch"]),
                            max_steps, on_epoch_start, on_point=judge and (lambda: judge.score(self.model)),
                            points=self.cfg.budget.curve_points, on_curve=self.log_point):
                return False
            before_finish()
            self.model.eval()
            self.finish(loop.state.history, loop.timing(), example, summary(loop.state.history), loop.state.curve)
        loop.discard()
        return True

    def log_point(self, point: dict) -> None:
        """A curve point in MLflow, at step = images seen: curve_fid, curve_recall, ..."""
        values = {f"curve_{k}": v for k, v in point.items() if k not in ("step", "images") and v is not None}
        self.tracker.log_metrics(values, step=point["images"])

    def finish(self, history: list[dict], timing: dict, example: Tensor, extra: dict | None = None,
               curve: list[dict] | None = None) -> None:
        """Write history, curve, timing and (last) the model file; log the model; the run is then complete."""
        write_json(self.paths.run_dir / "history.json", history)
        if curve:
            write_json(self.paths.run_dir / "curve.json", curve)
        write_json(self.paths.run_dir / "timing.json", timing)
        self.tracker.log_metrics({"train_seconds": timing["train_seconds"],
                                  "images_per_second": timing["images_per_second"]})
        save_model(self.paths.model, self.name, self.spec.family, config_dump(self.mcfg), self.data.shape,
                   self.model, {"epochs": len(history), **(extra or {})})
        self.tracker.log_model(self.model, example)


def run_session(family_loop, name: str, cfg: StudyConfig, data: Dataset, paths: TrainPaths, tracker=None,
                root: Path = Path("."), max_steps: int | None = None, judge=None) -> bool:
    """Train one model with `family_loop` (its family's loop function); False when stopped early by `max_steps`.

    The caller imports the family's loop itself (pipeline.train.autoencoder or .gan), so that a training stage
    imports only its own family's loop. `judge` (pipeline.evaluate.metrics.Judge) measures a generative model's
    curve."""
    session = Session(name, cfg, data, paths, tracker, root, judge)
    return family_loop(session, max_steps=max_steps)
