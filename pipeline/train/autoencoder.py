"""The autoencoder family's one training loop.

Every autoencoder goes through here: the model's own `loss(x)` holds whatever makes it special (noise,
sparsity penalties, KL terms), so this loop never looks at which model it trains. A closed-form model (PCA)
is fitted in one shot instead of by gradient steps. Each epoch records train and test reconstruction MSE
(per pixel, on [0, 1] pixels, the same measure for every model; the train value on a fixed seeded subset as
large as the test split, so that the epoch's end costs a fraction of its steps), the test value of each loss
term, and (at most 20 epochs of a run) a grid of test images over their reconstructions and, for generative
models, samples from fixed latents. The final evaluation measures the whole train split.
"""

from __future__ import annotations

import time

import torch

from pipeline.data import showcase
from pipeline.models.base import Autoencoder, ClosedForm, Generative
from pipeline.train import distributed
from pipeline.train.common import batched, interleave_rows, make_optimizer
from pipeline.train.session import Session


def reconstruction_mse(model: Autoencoder, x: torch.Tensor) -> float:
    return float(((batched(model.reconstruct, x) - x) ** 2).mean())


def train_autoencoder(s: Session, max_steps: int | None = None) -> bool:
    model: Autoencoder = s.model  # type: ignore[assignment]
    x_train, y_train = s.data.x_train.to(s.device), s.data.y_train.to(s.device)
    x_test = s.data.x_test.to(s.device)
    some = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(s.cfg.seed))[:len(x_test)]
    x_train_some = x_train[some.sort().values.to(s.device)]  # train MSE per epoch: a fixed subset
    shown = x_test[showcase(s.data.y_test, s.cfg.train.grid_size // 2).to(s.device)]
    example = x_test[:2]  # two: keeps the batch dimension dynamic in the exported model

    phase: dict[str, str] = {}  # the schedule's phase of the current epoch, for models that have one

    def start_epoch(epoch: int) -> None:
        name = model.start_epoch(epoch)
        phase.clear()
        if name is not None:
            phase["phase"] = name

    def end_epoch(epoch: int) -> dict:
        model.eval()
        with torch.no_grad():
            row = {**phase, "train_mse": reconstruction_mse(model, x_train_some), "test_mse": reconstruction_mse(model, x_test)}
            chunks = x_test.split(500)
            terms = [model.loss(chunk) for chunk in chunks]
            for k in terms[0]:
                if f"test_{k}" in row:
                    raise RuntimeError(f"{s.name}: loss term '{k}' clashes with the loop's own test_{k}")
                row[f"test_{k}"] = sum(float(t[k]) * len(c) for t, c in zip(terms, chunks)) / len(x_test)
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
        """The test MSE at the end of each phase (e.g. before and after fine-tuning)."""
        return {"phase_test_mse": {r["phase"]: r["test_mse"] for r in history if "phase" in r}}

    return s.fit(loop, x_train, y_train, step, end_epoch, example, max_steps, on_epoch_start=start_epoch,
                 summary=summary)
