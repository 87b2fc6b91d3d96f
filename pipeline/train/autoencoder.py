"""The autoencoder family's one training loop.

Every autoencoder goes through here: the model's own `loss(x)` holds whatever makes it special (noise,
sparsity penalties, KL terms), so this loop never looks at which model it trains. A closed-form model (PCA)
is fitted in one shot instead of by gradient steps. Each epoch records train and validation reconstruction MSE
(per pixel, on [0, 1] pixels, the same measure for every model), the validation value of each loss term, and (at
most 20 epochs of a run) a grid of validation images over their reconstructions and, for generative models,
samples from fixed latents. Training never sees the test split: the curves are what choices (epochs) are read
from. The per-epoch values are measured on fixed seeded subsets of EPOCH_EVAL_IMAGES train and validation images
(the curves' shape, at a few per cent of the steps' time); where a number is used beyond the curve, the whole
validation split is measured: `val_mse_full` at the last epoch and at the end of each phase of a schedule (the
greedy stack's `phase_val_mse`). The evaluation stage measures the whole train and test splits. The epoch's
measurements draw from their own seeded random stream (denoising noise, VAE samples; the CPU generator and, on
CUDA, the device's), so they neither change nor depend on the training's.
"""

from __future__ import annotations

import time

import torch

from pipeline.data import showcase
from pipeline.models.base import Autoencoder, ClosedForm, Generative
from pipeline.train import distributed
from pipeline.train.common import batched, interleave_rows, make_optimizer
from pipeline.train.session import Session

EPOCH_EVAL_IMAGES = 250  # per-epoch train and validation MSE and loss terms: fixed subsets of this many images


def reconstruction_mse(model: Autoencoder, x: torch.Tensor) -> float:
    return float(((batched(model.reconstruct, x) - x) ** 2).mean())


def train_autoencoder(s: Session, max_steps: int | None = None) -> bool:
    model: Autoencoder = s.model  # type: ignore[assignment]
    x_train, y_train = s.data.x_train.to(s.device), s.data.y_train.to(s.device)
    x_val = s.data.x_val.to(s.device)

    def subset(x: torch.Tensor) -> torch.Tensor:
        some = torch.randperm(len(x), generator=torch.Generator().manual_seed(s.cfg.seed))[:EPOCH_EVAL_IMAGES]
        return x[some.sort().values.to(s.device)]

    x_train_some, x_val_some = subset(x_train), subset(x_val)
    shown = x_val[showcase(s.data.y_val, s.cfg.train.grid_size // 2).to(s.device)]
    example = x_val[:2]  # two: keeps the batch dimension dynamic in the exported model

    phase: dict[str, str] = {}  # the schedule's phase of the current epoch, for models that have one

    def start_epoch(epoch: int) -> None:
        name = model.start_epoch(epoch)
        phase.clear()
        if name is not None:
            phase["phase"] = name

    def last_epoch() -> int:  # called during training, when `loop` (below) exists; a closed-form fit has one epoch
        return 1 if isinstance(model, ClosedForm) else -(-loop.total_steps(len(x_train)) // (len(x_train) // cfg.batch_size))

    def phase_ends(epoch: int) -> bool:
        """Whether `epoch` is the last of its phase; schedules depend on the epoch only (the loop relies on it when
        resuming), so asking for the next epoch's phase and switching back leaves the model as it was."""
        if not phase or epoch >= last_epoch():
            return False
        ends = model.start_epoch(epoch + 1) != phase["phase"]
        model.start_epoch(epoch)
        return ends

    def end_epoch(epoch: int) -> dict:
        model.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[s.device] if s.device.type == "cuda" else []):
            torch.manual_seed(s.cfg.seed)
            row = {**phase, "train_mse": reconstruction_mse(model, x_train_some),
                   "val_mse": reconstruction_mse(model, x_val_some)}
            if epoch == last_epoch() or phase_ends(epoch):
                row["val_mse_full"] = reconstruction_mse(model, x_val)
            terms = model.loss(x_val_some)
            for k in terms:
                if f"val_{k}" in row:
                    raise RuntimeError(f"{s.name}: loss term '{k}' clashes with the loop's own val_{k}")
                row[f"val_{k}"] = float(terms[k])
            s.grid(interleave_rows(shown, model.reconstruct(shown)), "reconstructions", epoch)
            if isinstance(model, Generative):
                fixed = torch.Generator().manual_seed(s.cfg.seed)  # the same latents every epoch
                s.grid(model.sample(s.cfg.train.grid_size, fixed), "samples", epoch)
        model.train()
        return row

    if isinstance(model, ClosedForm):
        s.fresh_run_dir()
        with s.run():
            t0 = time.perf_counter()
            model.fit(x_train)
            seconds = time.perf_counter() - t0
            row = {"epoch": 1, **end_epoch(1)}
            s.tracker.log_metrics(row, step=1)
            timing = {"train_seconds": round(seconds, 3), "images_seen": len(x_train), "steps": 0,
                      "images_per_second": round(len(x_train) / seconds, 1)}
            s.finish([row], timing, example)
        return True

    cfg = s.mcfg
    opt = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
    loop = s.loop({"opt": opt}, batch_size=cfg.batch_size, epochs=getattr(cfg, "epochs", None))  # VAE: the budget

    def step(x: torch.Tensor, _y: torch.Tensor) -> dict[str, torch.Tensor]:
        with s.autocast():
            out = model.loss(x)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        distributed.average_gradients(model)  # several processes: the global batch's gradient
        opt.step()
        return {k: v.detach() for k, v in out.items()}

    def summary(history: list[dict]) -> dict:
        """The validation MSE (whole split) at the end of each phase (e.g. before and after fine-tuning)."""
        return {"phase_val_mse": {r["phase"]: r["val_mse_full"] for r in history if "phase" in r and "val_mse_full" in r}}

    return s.fit(loop, x_train, y_train, step, end_epoch, example, max_steps, on_epoch_start=start_epoch,
                 summary=summary, phase=lambda step: phase.get("phase", ""))  # a greedy stack's layer
