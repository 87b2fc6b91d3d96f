"""The epoch/step driver every training loop runs on: batching, checkpoints, resume, progress, history.

A family's loop (autoencoder, GAN, the evaluator's classifier) supplies a `step` function (one optimizer step
on a batch, returning floats to average over the epoch) and an `end_epoch` function (test metrics, grids).
This driver owns everything that must be identical whether or not the run was interrupted:

- the batch order of epoch e is a permutation seeded by (seed, e), so a resumed epoch skips exactly the
  batches already done;
- a checkpoint (written atomically every `checkpoint_every` steps and at each epoch end) holds every module
  and optimizer state, the torch RNG state, the epoch's running sums and the history so far;
- a checkpoint is resumed only when its fingerprint (model, config, seed, data checksum, code) matches this run;
- a step whose loss terms are not finite, or weights that are not, stop training at once with one line (model,
  epoch, step, the terms, the learning rates); the last checkpoint written before it is kept, never a bad one;
- where the time goes is recorded (`profile`): optimizer steps, end-of-epoch work, curve points, checkpoint
  writes and tracking calls;
- the FLOPs of a training image are counted (`pipeline.train.flops`) on the first real step of each phase of the
  run (`phase(step)` names it: a ProGAN resolution, a lazy penalty's step), on a snapshot of the modules,
  optimizers and random state that is restored before the step runs for real, and weighted by the steps of each
  phase;
- training lasts `epochs` epochs, or `images` images (the budget every generative model shares; the last epoch
  is then cut short), and at `points` evenly spaced steps of it `on_point` measures the model (a curve point:
  FID and recall against the images seen), recorded in the checkpointed state like the history.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from tqdm import tqdm

from pipeline import StudyError, brief
from pipeline.io import atomic_path
from pipeline.train import distributed
from pipeline.train.flops import count_flops

StepFn = Callable[[Tensor, Tensor], dict[str, float]]
EndEpochFn = Callable[[int], dict[str, float]]
PointFn = Callable[[], dict[str, float]]


@dataclass
class Progress:
    epoch: int = 0  # the epoch in progress (0-based)
    batch: int = 0  # batches of that epoch already done
    step: int = 0  # optimizer steps in all
    sums: dict[str, float] = field(default_factory=dict)  # running sums of this epoch's step metrics
    counts: dict[str, int] = field(default_factory=dict)  # how many steps reported each (some not every step)
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per finished epoch
    images: int = 0  # training images seen
    seconds: float = 0.0  # time spent in training steps (excludes end-of-epoch evaluation)
    run_id: str | None = None  # the tracking run, continued on resume
    curve: list[dict[str, Any]] = field(default_factory=list)  # curve points measured so far
    profile: dict[str, float] = field(default_factory=dict)  # seconds outside the steps, by kind of work
    lowest: dict[str, float] = field(default_factory=dict)  # smallest |value| of each step metric so far
    flops: dict[str, float] = field(default_factory=dict)  # FLOPs per training image of a step, by phase
    phase_steps: dict[str, int] = field(default_factory=dict)  # optimizer steps run in each phase


class Diverged(StudyError):
    """Training produced a non-finite loss or weight: stopped, nothing written after the last good checkpoint."""


class Loop:
    def __init__(
        self,
        modules: dict[str, nn.Module | Any],  # anything with state_dict() / load_state_dict()
        optimizers: dict[str, torch.optim.Optimizer],
        *,
        epochs: int | None = None,
        images: int | None = None,
        batch_size: int,
        seed: int,
        checkpoint: Path,
        checkpoint_every: int,
        fingerprint: str,
        desc: str,
    ):
        self.modules, self.optimizers = modules, optimizers
        if (epochs is None) == (images is None):
            raise ValueError("a loop lasts either `epochs` or `images`")
        self.epochs, self.images, self.batch_size, self.seed = epochs, images, batch_size, seed
        self.checkpoint, self.checkpoint_every = Path(checkpoint), checkpoint_every
        self.fingerprint, self.desc = fingerprint, desc
        self.state = Progress()

    # -- checkpoints ---------------------------------------------------------------------------------------
    def _timed(self, kind: str, fn: Callable, *args) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.state.profile[kind] = round(self.state.profile.get(kind, 0.0) + time.perf_counter() - t0, 4)

    def _rates(self) -> str:
        return ", ".join(f"{k} " + "/".join(f"{g['lr']:.3g}" for g in o.param_groups) for k, o in self.optimizers.items())

    def _diverged(self, what: str) -> Diverged:
        s = self.state
        kept = (f"the last good checkpoint is kept ({self.checkpoint})" if self.checkpoint.is_file()
                else "no checkpoint was written yet")
        return Diverged(f"{self.desc}: training diverged at epoch {s.epoch + 1}, step {s.step}: {what} "
                        f"(learning rates: {self._rates() or 'none'}); lower them and rerun. {kept}; "
                        f"no model file written")

    def _read_sums(self) -> None:
        """Device-side running sums (CUDA) read into floats: at each checkpoint and epoch end, once, not every
        step (nanoGPT's habit); a non-finite one means a step since the last read diverged."""
        s = self.state
        if not any(torch.is_tensor(v) for v in (*s.sums.values(), *s.lowest.values())):
            return
        t0 = time.perf_counter()
        s.sums = {k: float(v) for k, v in s.sums.items()}  # waits for the device: the steps' time, charged to them
        s.lowest = {k: float(v) for k, v in s.lowest.items()}
        s.seconds += time.perf_counter() - t0
        if not all(math.isfinite(v) for v in s.sums.values()):
            raise self._diverged("a loss term since the last check is not finite: "
                                 + "  ".join(f"{k} {v:.4g}" for k, v in s.sums.items()))

    def check_weights(self) -> None:
        """Every floating tensor of every module finite, or Diverged (before a checkpoint or a model file)."""
        for k, m in self.modules.items():
            for name, t in m.state_dict().items():
                if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    raise self._diverged(f"{k}.{name} has non-finite values")

    def save(self) -> None:
        self.check_weights()
        if distributed.is_main():  # every rank holds the same weights: one writes them
            self._timed("checkpoint", self._save)

    def _save(self) -> None:
        payload = {
            "fingerprint": self.fingerprint,
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "state": asdict(self.state),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        }
        with atomic_path(self.checkpoint) as tmp:
            torch.save(payload, tmp)

    def restore(self) -> bool:
        """Load the checkpoint if there is one made by this very configuration; True when resumed."""
        if not self.checkpoint.is_file():
            return False
        try:
            ck = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
            if ck.get("fingerprint") != self.fingerprint:
                if distributed.is_main():
                    print(f"{self.checkpoint}: made with other settings or data; starting over", file=sys.stderr)
                    self.checkpoint.unlink(missing_ok=True)
                return False
            for k, m in self.modules.items():
                m.load_state_dict(ck["modules"][k])
            for k, o in self.optimizers.items():
                o.load_state_dict(ck["optimizers"][k])
            self.state = Progress(**ck["state"])
            torch.set_rng_state(ck["rng"]["torch"])
            if ck["rng"]["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(ck["rng"]["cuda"])
        except StudyError:
            raise
        except Exception as exc:
            raise StudyError(
                f"{self.checkpoint}: unreadable checkpoint ({brief(exc)}); delete it to start over"
            ) from None
        if distributed.is_main():
            print(f"resuming {self.desc} from {self.checkpoint} (epoch {self.state.epoch + 1}, "
                  f"step {self.state.step})", file=sys.stderr)
        return True

    def _count_flops(self, step: StepFn, x: Tensor, y: Tensor) -> float:
        """FLOPs per image of one step on (x, y), run on a snapshot that is then put back: the modules, the
        optimizers and the random state are as they were, and the step itself runs afterwards as usual."""
        saved = copy.deepcopy({"modules": {k: m.state_dict() for k, m in self.modules.items()},
                               "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()}})
        rng = torch.random.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        flops = count_flops(lambda: step(x, y))
        for k, m in self.modules.items():
            m.load_state_dict(saved["modules"][k])
        for k, o in self.optimizers.items():
            o.load_state_dict(saved["optimizers"][k])
            o.zero_grad(set_to_none=True)
        for m in self.modules.values():
            if isinstance(m, nn.Module):
                m.zero_grad(set_to_none=True)
        torch.random.set_rng_state(rng)
        if cuda_rng:
            torch.cuda.set_rng_state_all(cuda_rng)
        return flops / len(x)

    def discard(self) -> None:
        distributed.barrier()  # no rank still reading it
        if distributed.is_main():
            self.checkpoint.unlink(missing_ok=True)

    # -- the loop ------------------------------------------------------------------------------------------
    def total_steps(self, n: int) -> int:
        """Optimizer steps in all for `n` training images (the last partial batch of an epoch is dropped)."""
        per_epoch = n // self.batch_size  # batch norm needs > 1 image: no partial batch
        if per_epoch == 0:
            raise StudyError(f"{self.desc}: batch_size {self.batch_size} is larger than the {n} training images")
        if self.epochs is not None:
            return self.epochs * per_epoch
        if self.images < self.batch_size:
            raise StudyError(f"{self.desc}: budget.images ({self.images}) is smaller than one batch ({self.batch_size})")
        return self.images // self.batch_size

    def point_steps(self, n: int, points: int) -> list[int]:
        """The steps after which a curve point is measured: `points` evenly spaced, the last one at the end."""
        total = self.total_steps(n)
        return sorted({max(1, round(total * k / points)) for k in range(1, points + 1)})

    def run(
        self,
        x: Tensor,
        y: Tensor,
        step: StepFn,
        end_epoch: EndEpochFn,
        on_epoch: Callable[[dict[str, float]], None] = lambda row: None,
        max_steps: int | None = None,
        on_epoch_start: Callable[[int], None] = lambda epoch: None,
        on_point: PointFn | None = None,
        points: int = 10,
        on_curve: Callable[[dict[str, Any]], None] = lambda point: None,
        phase: Callable[[int], str] = lambda step: "",
    ) -> bool:
        """Train to the end of the budget; returns False when stopped early by `max_steps` (checkpoint kept)."""
        n, bs, s = len(x), self.batch_size, self.state
        per_epoch, total = n // bs, self.total_steps(n)
        at = set(self.point_steps(n, points)) if on_point is not None else set()
        epochs = -(-total // per_epoch)
        distributed.check_batch(self.desc, bs)
        main, eager = distributed.is_main(), x.device.type == "cpu"
        self._read_sums()  # a checkpoint keeps floats
        bar = tqdm(total=total, initial=s.step, desc=self.desc, unit="step", disable=None if main else True, leave=False,
                   mininterval=1.0)
        try:
            for epoch in range(s.epoch, epochs):
                order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
                on_epoch_start(epoch + 1)  # also when resuming mid-epoch: schedules depend on the epoch only
                for b in range(s.batch, min(per_epoch, total - epoch * per_epoch)):
                    idx = distributed.local(order[b * bs:(b + 1) * bs]).to(x.device)  # this process's shard
                    key = phase(s.step)
                    if key not in s.flops:  # the first step of a phase: its FLOPs, counted apart from the steps' time
                        s.flops[key] = self._timed("flop_count", self._count_flops, step, x[idx], y[idx])
                    s.phase_steps[key] = s.phase_steps.get(key, 0) + 1
                    t0 = time.perf_counter()
                    metrics = distributed.average_values(step(x[idx], y[idx]))
                    if eager:  # CPU: reading the values costs nothing, so every step is checked
                        metrics = {k: float(v) for k, v in metrics.items()}
                        if not all(math.isfinite(v) for v in metrics.values()):
                            s.step += 1
                            raise self._diverged("  ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
                    s.seconds += time.perf_counter() - t0
                    for k, v in metrics.items():  # on CUDA: device tensors, read at the next check (no sync here)
                        s.sums[k] = s.sums.get(k, 0.0) + v
                        low = s.lowest.get(k, math.inf)
                        s.lowest[k] = torch.minimum(torch.as_tensor(low, dtype=v.dtype, device=v.device), v.abs()) \
                            if torch.is_tensor(v) else min(low, abs(v))
                        s.counts[k] = s.counts.get(k, 0) + 1
                    s.batch, s.step, s.images = b + 1, s.step + 1, s.images + bs
                    bar.update(1)
                    if s.step in at and main:  # rank 0 measures the curve (and writes it)
                        point = {"step": s.step, "images": s.images, "seconds": round(s.seconds, 3),
                                 **self._timed("curve", on_point)}
                        s.curve.append(point)
                        self._timed("tracking", on_curve, point)
                    if s.step % self.checkpoint_every == 0:
                        self._read_sums()
                        self.save()
                    if max_steps is not None and s.step >= max_steps:
                        self.save()
                        return False
                self._read_sums()
                row = {"epoch": epoch + 1, **{f"train_{k}": v / s.counts[k] for k, v in s.sums.items()}}
                extra = self._timed("epoch_end", end_epoch, epoch + 1)
                if clash := row.keys() & extra.keys():
                    raise RuntimeError(f"{self.desc}: epoch metrics {sorted(clash)} come from both the step and the epoch end")
                row.update(extra)
                s.history.append(row)
                s.epoch, s.batch, s.sums, s.counts = epoch + 1, 0, {}, {}
                self._timed("tracking", on_epoch, row)
                shown = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                  for k, v in row.items() if k != "epoch")
                if main:
                    tqdm.write(f"{self.desc} epoch {epoch + 1}/{epochs}  {shown}", file=sys.stderr)
                self.save()
        finally:
            bar.close()
        return True

    def flops_per_image(self) -> float:
        """FLOPs per training image over the whole run: each phase's count weighted by its steps."""
        s = self.state
        steps = sum(s.phase_steps.values())
        return sum(s.flops[k] * n for k, n in s.phase_steps.items()) / steps if steps else 0.0

    def timing(self) -> dict[str, float]:
        s = self.state
        return {"train_seconds": round(s.seconds, 3), "images_seen": s.images, "steps": s.step,
                "images_per_second": round(s.images / s.seconds, 1) if s.seconds > 0 else 0.0,
                "flops_per_image": round(self.flops_per_image()),
                "flops_by_phase": {k: round(v) for k, v in sorted(s.flops.items())}}

    def profile(self) -> dict[str, float]:
        """Seconds by kind of work inside the loop: steps, and each kind of work between them."""
        return {"steps": round(self.state.seconds, 3), **{k: round(v, 3) for k, v in sorted(self.state.profile.items())}}
