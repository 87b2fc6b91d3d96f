"""`make bench`: the study's training loop against a plain PyTorch loop on the same model, batches and optimizer.

For DCGAN and the conv autoencoder of params.yaml, `--epochs` epochs of steps (default 2, so that the per-epoch
work of the study's loop, its grids and test metrics, is inside the measurement) run from the same seed, each way
`--repeats` times (alternated; the fastest run of each way counts):

- through the study: `train_model(..., max_steps=N)`, the code a training stage runs (checkpoints every
  `train.checkpoint_every` steps and at each epoch end, per-epoch grids and test metrics, progress bar), timed from
  the first step to the last (`Loop.run`), tracking off;
- through a plain loop written here: the same seeded batch order, the same loss and optimizer, nothing else.

Time is CPU time of the process by default (`--clock cpu`, one thread: `--threads 1`): CPU time of a one-thread
process counts only its own work (every thread of it: the loop has no background threads), not what other tenants
of a shared machine take. It did not make this 2-core machine quiet: the plain loop's identical runs still differed
by 6-31 % (wall clock, two threads: 25-46 %). `--clock wall` times wall seconds instead.

It prints images/s of both and two ratios: the loop itself (steps, batching, bookkeeping, checkpoints and
progress, without the per-epoch evaluation and curve points a plain loop does not do) against the plain loop, and
the whole `Loop.run` (those included) against it; then the per-epoch work as a share of the step time. With
`--stage`, the wall time of the whole stage process (`python -m stages train-... --tracking none`, from process
start to its model file). `--processes 1 2`
instead runs DCGAN's training stage data-parallel in 1 and then 2 processes (torchrun, one thread each, a budget
of `--images`) and prints images/s of each (train.processes). A benchmark, not a
test: times depend on the machine (state it beside the numbers) and on what else runs.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

import pipeline.train.loop as loop_module
from pipeline.config import ema_decay, load_config
from pipeline.data import load, prepare
from pipeline.models import build
from pipeline.train.common import make_optimizer, seed_everything, update_ema
from pipeline.train.loop import Loop
from pipeline.train.objectives import OBJECTIVES
from pipeline.train.run import train_model
from pipeline.train.session import TrainPaths


CLOCK = time.perf_counter  # set by main(): time.process_time for --clock cpu


def plain_gan(cfg, name, data, steps: int) -> float:
    seed_everything(cfg.seed)
    mcfg = cfg.model(name)
    model = build(name, mcfg, data.shape).to(memory_format=torch.channels_last)  # as the study's GAN loop
    objective = OBJECTIVES[mcfg.objective](mcfg)
    betas = (mcfg.beta1, mcfg.beta2)
    opt_g = make_optimizer(mcfg.optimizer, model.generator.parameters(), mcfg.lr_g, betas)
    opt_d = make_optimizer(mcfg.optimizer, model.discriminator.parameters(), mcfg.lr_d, betas)
    x = data.x_train * 2 - 1
    bs, n = mcfg.batch_size, len(x)
    t0 = CLOCK()
    for step in range(steps):
        epoch, b = divmod(step, n // bs)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        real = x[order[b * bs:(b + 1) * bs]]
        fake = model.generator(model.latent(bs))
        d_loss, _ = objective.discriminator_loss(model.discriminator, real, fake.detach(), step)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        model.discriminator.requires_grad_(False)
        g_loss = objective.generator_loss(model.discriminator, fake)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        model.discriminator.requires_grad_(True)
        update_ema(model.ema, model.generator, ema_decay(cfg.ema, (step + 1) * bs, bs))
    return CLOCK() - t0


def plain_autoencoder(cfg, name, data, steps: int) -> float:
    seed_everything(cfg.seed)
    mcfg = cfg.model(name)
    model = build(name, mcfg, data.shape)
    opt = make_optimizer(mcfg.optimizer, model.parameters(), mcfg.lr)
    x = data.x_train
    bs, n = mcfg.batch_size, len(x)
    t0 = CLOCK()
    for step in range(steps):
        epoch, b = divmod(step, n // bs)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        loss = model.loss(x[order[b * bs:(b + 1) * bs]])["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return CLOCK() - t0


def study_loop(cfg, name, data, steps: int, tmp: Path) -> tuple[float, float, float]:
    """Seconds spent in `Loop.run` (first step to last, everything included), of them in the per-epoch evaluation
    and curve points (the loop's own profile), and in the optimizer steps."""
    spent: list[float] = []
    evaluating: list[float] = []
    stepping: list[float] = []
    run = Loop.run

    @functools.wraps(run)
    def timed(self, *args, **kwargs):
        t0 = CLOCK()
        try:
            return run(self, *args, **kwargs)
        finally:
            spent.append(CLOCK() - t0)
            evaluating.append(sum(self.state.profile.get(k, 0.0) for k in ("epoch_end", "curve")))
            stepping.append(self.state.seconds)

    Loop.run = timed  # type: ignore[method-assign]
    loop_time = loop_module.time  # the time module the loop imported, put back below
    loop_module.time = SimpleNamespace(perf_counter=CLOCK)  # the loop's own step and profile timers on our clock
    try:
        finished = train_model(name, cfg, data, TrainPaths.for_model(name, tmp / name), max_steps=steps)
    finally:
        Loop.run = run  # type: ignore[method-assign]
        loop_module.time = loop_time
    assert not finished, f"{name}: the budget ended before {steps} steps"
    return sum(spent), sum(evaluating), sum(stepping)


def stage_wall(name: str, family: str, tmp: Path) -> float:
    """A whole training stage, process start to model file, tracking off, in a scratch copy of the study (params,
    prepared data and the evaluator of this checkout; the checkout's own results are left alone)."""
    work = _scratch(tmp, f"stage-{name}")
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    env.pop("DVC_ROOT", None)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stages", f"train-{family}", name, "--tracking", "none"], check=True,
                   capture_output=True, cwd=work, env=env)
    return time.perf_counter() - t0


def _scratch(tmp: Path, name: str, edit=lambda raw: None) -> Path:
    """A scratch copy of the study (params edited by `edit`, this checkout's prepared data and evaluator)."""
    import yaml

    work = tmp / name
    (work / "models").mkdir(parents=True)
    raw = yaml.safe_load(Path("params.yaml").read_text())
    edit(raw)
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (work / "data").symlink_to(Path("data").resolve())
    if Path("models/evaluator.pt").is_file():
        (work / "models" / "evaluator.pt").write_bytes(Path("models/evaluator.pt").read_bytes())
    return work


def processes_bench(counts: list[int], images: int, tmp: Path) -> None:
    """DCGAN's training stage in 1, 2, ... processes, one thread each: images/s of the steps (rank 0's timing.json:
    the global batch per step over the step time, gradient averaging included) and the stage's wall time."""
    import json

    print(f"dcgan, budget {images:,} images, one thread per process")
    print(f"{'processes':>9} {'img/s':>8} {'stage wall (s)':>15}")
    for n in counts:
        def edit(raw, n=n):
            raw["train"]["processes"] = n
            raw["budget"]["images"] = images
            raw["budget"]["curve_points"] = 1

        work = _scratch(tmp, f"processes-{n}", edit)
        env = {**os.environ, "PYTHONPATH": str(Path.cwd()), "OMP_NUM_THREADS": "1"}
        env.pop("DVC_ROOT", None)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "stages", "train-gan", "dcgan", "--tracking", "none"], check=True,
                       capture_output=True, cwd=work, env=env)
        wall = time.perf_counter() - t0
        timing = json.loads((work / "runs" / "dcgan-42" / "train" / "timing.json").read_text())
        print(f"{n:9d} {timing['images_per_second']:8.1f} {wall:15.1f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=2, help="epochs of steps to time (default 2)")
    ap.add_argument("--repeats", type=int, default=5, help="runs of each loop, alternated; the fastest counts "
                    "(default 5)")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="time CPU seconds of this process "
                    "(default) or wall seconds")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--stage", action="store_true", help="also time each model's whole training stage "
                    "(needs `dvc repro prepare evaluator` first)")
    ap.add_argument("--processes", type=int, nargs="+", help="instead: DCGAN's stage at these process counts")
    ap.add_argument("--images", type=int, default=16000, help="the budget for --processes (default 16,000)")
    args = ap.parse_args()
    if args.threads < 1 or args.repeats < 1 or args.epochs < 1:
        ap.error("--threads, --repeats and --epochs must be at least 1")
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    cfg = load_config()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.processes:
            return processes_bench(args.processes, args.images, tmp)
        if Path("data/prepared/manifest.json").is_file():
            data = load(Path("data/prepared"))
        else:
            prepare(cfg.data, cfg.seed, tmp / "data")
            data = load(tmp / "data")
        print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {len(data.x_train)} training images, "
              f"{args.clock} clock (images/s = images per {args.clock} second)")
        print("loop: the study's loop without its per-epoch evaluation; all: Loop.run as a whole; ratio: against "
              "the plain loop; evaluation: per-epoch work and curve points, as a share of the step time; noise: the plain loop's "
              "slowest run against its fastest (a ratio within it is no difference); paired: the loop's ratio in each "
              "repeat (plain run beside loop run), median [min, max]")
        print(f"{'model':8} {'steps':>6} {'plain img/s':>12} {'loop img/s':>11} {'ratio':>6} {'all img/s':>10} "
              f"{'ratio':>6} {'evaluation':>11} {'noise':>6}  paired")
        for name, family, plain in (("dcgan", "gan", plain_gan), ("conv", "ae", plain_autoencoder)):
            bs = cfg.model(name).batch_size
            steps = args.epochs * (len(data.x_train) // bs)
            plain(cfg, name, data, min(steps, 5))  # warm-up: first calls allocate
            runs, bases = [], []
            for k in range(args.repeats):  # alternated; the fastest of each (timeit's habit: the others were disturbed)
                runs.append(study_loop(cfg, name, data, steps, tmp / f"{name}-{k}"))
                bases.append(plain(cfg, name, data, steps))
            ours, evaluating, stepping = min(runs)
            base = min(bases)
            images, loop = steps * bs, ours - evaluating
            line = (f"{name:8} {steps:6d} {images / base:12.1f} {images / loop:11.1f} {base / loop:6.3f} "
                    f"{images / ours:10.1f} {base / ours:6.3f} {evaluating / stepping:10.1%} "
                    f"{max(bases) / base - 1:6.1%}")  # the plain loop's slowest run against its fastest
            paired = sorted(b / (r[0] - r[1]) for r, b in zip(runs, bases))
            line += f"  {paired[len(paired) // 2]:.3f} [{paired[0]:.3f}, {paired[-1]:.3f}]"
            if args.stage:
                line += f"   stage {stage_wall(name, family, tmp):.1f} s (process start to model file)"
            print(line, flush=True)


if __name__ == "__main__":
    main()
