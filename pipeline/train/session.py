"""One training run of one model: set-up and wrap-up that both family loops share.

The family loops (`autoencoder.py`, `gan.py`, `diffusion.py`) differ only in what a step and an epoch end do; everything
else (seeding, device, the budget, the curve points, the tracking run, grids, the final model file, history,
curve and timing, discarding the checkpoint) happens here, once.

A generative model (the VAE, every GAN, every diffusion model) trains for the study's `budget.images` and, given a judge (the
evaluator's metrics), is measured at `budget.curve_points` evenly spaced points of it: `curve.json` holds FID,
precision, recall and coverage against images seen and training seconds.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pipeline.clock import CLOCK
from pipeline.code import code_hash, command_files
from pipeline.config import StudyConfig, config_dump
from pipeline.data import Dataset
from pipeline.io import write_json
from pipeline.rules import BLOW_UP, collapsed
from pipeline.models import TRAIN_STAGE, build, run_name, spec
from pipeline.models.base import Generative
from pipeline import StudyError
from pipeline.tracking import NullTracker, run_tags
from pipeline.train import distributed
from pipeline.train.common import fingerprint, grid, resolve_device, save_grid, save_model, seed_everything
from pipeline.train.flops import machine, matmul_peak, throughput
from pipeline.train.loop import Loop


GRID_EPOCHS = 20  # per-epoch grids: every epoch up to 20 epochs, every k-th beyond (a PNG and an MLflow image each)


@dataclass(frozen=True)
class TrainPaths:
    model: Path  # models/<name>.pt: the trained model (written last, atomically)
    run_dir: Path  # runs/<name>/train: the run's records (history, curve, timing, health, profile), small, in git
    checkpoint: Path  # checkpoints/<name>.ckpt: resume point, deleted when training completes

    plots: Path = Path("plots")  # plots/<family>_history/<name>.json, plots/curve/<name>.json: DVC plots (dvc.yaml)
    grids: Path | None = None  # the per-epoch grids (DVC's cache, kept across a resume); default runs/<name>/grids

    @property
    def grid_dir(self) -> Path:
        return self.grids or self.run_dir.parent / "grids"

    @classmethod
    def for_model(cls, name: str, root: Path = Path(".")) -> "TrainPaths":
        return cls(root / "models" / f"{name}.pt", root / "runs" / name / "train", root / "checkpoints" / f"{name}.ckpt",
                   root / "plots")


# What `dvc plots` draws per epoch for each family: the fields every model of the family has (one schema per
# directory, as DVC's plot definitions by directory need), and the curve of a generative model against images seen.
PLOT_FIELDS = {"autoencoder": ("train_mse", "val_mse"), "gan": ("train_d_loss", "train_g_loss"),
               "diffusion": ("train_loss",)}
CURVE_FIELDS = ("images", "seconds", "fid", "recall", "classes_covered")


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
        distributed.start(self.device)  # joins torchrun's process group when launched by it
        self.model: nn.Module = build(name, self.mcfg, data.shape).to(self.device)
        if cfg.train.sync_batchnorm and distributed.world()[1] > 1:
            if self.device.type != "cuda":
                raise StudyError("train.sync_batchnorm: SyncBatchNorm needs CUDA devices; on CPU each process keeps "
                                 "its own batch statistics (set it to false)")
            self.model = distributed.sync_batchnorm(self.model)
        self.stage = f"{TRAIN_STAGE[self.spec.family]}@{run_name(name, cfg.seed)}"
        self.params: dict[str, Any] = {
            "model": name, "family": self.spec.family, "seed": cfg.seed, "device": str(self.device),
            "config": config_dump(self.mcfg), "data": config_dump(cfg.data), "train": config_dump(cfg.train),
        }
        self.generative = isinstance(self.model, Generative)
        if self.generative:
            self.params["budget"] = config_dump(cfg.budget)
        if hasattr(self.model, "ema"):  # a generator that averages
            self.params["ema"] = config_dump(cfg.ema)
        budget = ([config_dump(cfg.budget), config_dump(cfg.ema), config_dump(cfg.evaluate), config_dump(cfg.evaluator)]
                  if self.generative else [])
        code = code_hash(command_files(TRAIN_STAGE[self.spec.family], name))  # a checkpoint of other code: not resumed
        self.fingerprint = fingerprint(name, config_dump(self.mcfg), cfg.seed, data.manifest["sha256"], budget, code)

    def loop(self, optimizers: dict[str, torch.optim.Optimizer], batch_size: int, epochs: int | None = None) -> Loop:
        """The driver: `epochs` for an autoencoder that has them, the study's budget for a generative model."""
        images = self.cfg.budget.images if self.generative else None
        loop = Loop({"model": self.model}, optimizers, epochs=None if images else epochs, images=images,
                    batch_size=batch_size, seed=self.cfg.seed, checkpoint=self.paths.checkpoint,
                    checkpoint_every=self.cfg.train.checkpoint_every, fingerprint=self.fingerprint, desc=self.name)
        if not loop.restore():
            self.fresh_run_dir()
        n = len(self.data.x_train)
        epochs_total = -(-loop.total_steps(n) // (n // batch_size))
        every = -(-epochs_total // GRID_EPOCHS)
        self.grid_epochs = {e for e in range(1, epochs_total + 1) if e % every == 0} | {epochs_total}
        return loop

    def autocast(self):
        """The forward passes and losses of a step: in bfloat16 with `train.autocast: bf16` (backward and the
        optimizer stay in float32), as they are otherwise."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.train.autocast == "bf16")

    def fresh_run_dir(self) -> None:
        """A fresh start leaves no stale grids or records from an earlier configuration."""
        if not distributed.is_main():
            return
        for folder in (self.paths.run_dir, self.paths.grid_dir):
            shutil.rmtree(folder, ignore_errors=True)
        self.paths.run_dir.mkdir(parents=True)

    def run(self, run_id: str | None = None):
        return self.tracker.run(self.stage, run_id=run_id, tags=run_tags(self.root, self.stage, self.name, self.cfg.seed),
                                params=self.params)

    def grid(self, images: Tensor, key: str, epoch: int, force: bool = False) -> None:
        """Save an epoch's grid in the grids folder and send it to the tracker as an evolving image: at most GRID_EPOCHS
        evenly spaced epochs of a run (and its last) get one, unless `force`."""
        if not (force or epoch in getattr(self, "grid_epochs", {epoch})) or not distributed.is_main():
            return
        image = grid(images)
        save_grid(image, self.paths.grid_dir / f"{key}_{epoch:03d}.png")
        self.tracker.log_image(image, key=key, step=epoch)

    def fit(self, loop: Loop, x: Tensor, y: Tensor, step, end_epoch, example: Tensor,
            max_steps: int | None = None, before_finish=lambda: None, on_epoch_start=lambda epoch: None,
            summary=lambda history: {}, phase=lambda step: "") -> bool:
        """Run the family's step/end_epoch through the loop inside the tracking run, then finish.

        `summary(history)` gives what the model file keeps of the history besides the epoch count; `phase(step)`
        names the phase a step belongs to where steps of a run differ in FLOPs (the loop counts one of each)."""
        judge = self.judge if self.generative else None
        with self.run(loop.state.run_id) as run_id:
            loop.state.run_id = run_id
            self.model.train()
            if not loop.run(x, y, step, end_epoch, lambda row: self.tracker.log_metrics(row, row["epoch"]),
                            max_steps, on_epoch_start, on_point=judge and (lambda: judge.score(self.model)),
                            points=self.cfg.budget.curve_points, on_curve=self.log_point, phase=phase):
                return False
            before_finish()
            loop.check_weights()
            self.model.eval()
            if distributed.is_main():
                self.finish(loop.state.history, loop.timing(), example, summary(loop.state.history),
                            loop.state.curve, loop.profile(), loop.state.lowest)
        loop.discard()
        return True

    def log_point(self, point: dict) -> None:
        """A curve point in MLflow, at step = images seen: curve_fid, curve_recall, ..."""
        values = {f"curve_{k}": v for k, v in point.items() if k not in ("step", "images") and v is not None}
        self.tracker.log_metrics(values, step=point["images"])

    def finish(self, history: list[dict], timing: dict, example: Tensor, extra: dict | None = None,
               curve: list[dict] | None = None, loop_profile: dict | None = None,
               lowest: dict[str, float] | None = None) -> None:
        """Write history, curve, timing, health and (last) the model file; log the model; the run is then
        complete. profile.json (where the stage's time went) is written after the model, as the stage's last
        word on its own wall time."""
        if "flops_per_image" in timing:  # the steps' rate against the peak this process reaches (a closed form: none)
            with CLOCK.phase("peak"):
                peak = matmul_peak(self.device)
            timing = {**timing, **throughput(timing["flops_per_image"], timing["images_per_second"], peak,
                                             distributed.world()[1])}
        timing = {**timing, "machine": machine(self.device)}
        t0 = time.perf_counter()
        write_json(self.paths.run_dir / "history.json", history)
        if curve:
            write_json(self.paths.run_dir / "curve.json", curve)
        write_json(self.paths.run_dir / "timing.json", timing)
        family, run = self.spec.family, self.paths.run_dir.parent.name
        write_json(self.paths.plots / f"{family}_history" / f"{run}.json",
                   [{"epoch": r["epoch"], **{k: r[k] for k in PLOT_FIELDS[family] if k in r}} for r in history])
        write_json(self.paths.plots / "curve" / f"{run}.json",  # [] for a model that generates nothing
                   [{k: p[k] for k in CURVE_FIELDS} for p in curve or []])
        found = health(history, curve or [], self.data.num_classes, lowest or {})
        write_json(self.paths.run_dir / "health.json", found)
        if found["status"] != "ok":
            print(f"warning: {self.name} (seed {self.cfg.seed}): {found['reason']}", file=sys.stderr)
        self.tracker.set_tags({"health": found["status"]})
        self.tracker.describe(self.description(timing, curve or [], found))
        self.tracker.log_metrics({"train_seconds": timing["train_seconds"],
                                  "images_per_second": timing["images_per_second"]})
        CLOCK.add("write", time.perf_counter() - t0)
        with CLOCK.phase("export"):
            save_model(self.paths.model, self.name, self.spec.family, config_dump(self.mcfg), self.data.shape,
                       self.model, {"epochs": len(history), **(extra or {})})
            self.tracker.log_model(self.model, example)
        write_json(self.paths.run_dir / "profile.json", CLOCK.profile(loop_profile))

    def description(self, timing: dict, curve: list[dict], found: dict) -> str:
        """The run's description in MLflow: what was trained, on what budget, and how it ended."""
        budget = f"{timing['images_seen']:,} images ({timing['steps']:,} steps)"
        text = (f"**{self.name}** ({self.spec.family}, seed {self.cfg.seed}): {budget} in {timing['train_seconds']:.0f} s "
                f"of steps, {timing['images_per_second']:,.0f} images/s.")
        if curve and curve[-1].get("fid") is not None:
            text += (f" At the end of training (curve, {self.cfg.evaluate.curve_samples} samples): FID "
                     f"{curve[-1]['fid']:.1f}, recall {curve[-1]['recall']:.2f}, {curve[-1]['classes_covered']} classes.")
        if found["status"] != "ok":
            text += f" Warning: {found['reason']}."
        return text + " Final metrics: the evaluate stage's run of the same model."


def health(history: list[dict], curve: list[dict], num_classes: int, lowest: dict[str, float]) -> dict:
    """How a finished run ended: "ok", "blew_up" (a training loss's last epoch averages BLOW_UP times its
    smallest step value, floored at 1) or "collapsed" (the last curve point covers fewer than half the
    classes; both rules in pipeline/rules.py). Such a run still finishes: it is named, not stopped (non-finite values stop it, in the loop)."""
    last = history[-1] if history else {}
    for key in sorted(k for k in lowest if k.endswith("loss")):
        end, best = abs(last.get(f"train_{key}", 0.0)), lowest[key]
        if end > BLOW_UP * max(best, 1.0):
            return {"status": "blew_up", "reason": f"train_{key} ended at {end:.3g} after {best:.3g} at its best step: "
                                                   f"training blew up (a learning rate too high?)"}
    if curve and collapsed(curve[-1].get("classes_covered", num_classes), num_classes):
        return {"status": "collapsed", "reason": f"its samples cover {curve[-1]['classes_covered']} of {num_classes} "
                                                 f"classes at the end of training (mode collapse)"}
    return {"status": "ok", "reason": ""}


def run_session(family_loop, name: str, cfg: StudyConfig, data: Dataset, paths: TrainPaths, tracker=None,
                root: Path = Path("."), max_steps: int | None = None, judge=None) -> bool:
    """Train one model with `family_loop` (its family's loop function); False when stopped early by `max_steps`.

    The caller imports the family's loop itself (pipeline.train.autoencoder or .gan), so that a training stage
    imports only its own family's loop. `judge` (pipeline.evaluate.metrics.Judge) measures a generative model's
    curve."""
    with CLOCK.phase("setup"):
        session = Session(name, cfg, data, paths, tracker, root, judge)
    return family_loop(session, max_steps=max_steps)
