"""The commands, one per DVC stage. Only wiring: the work is in `pipeline`."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline import StudyError
from stages import DATA, PARAMS, TRACKING, Tracking, command, study_root, tracker_for


def _config(params: Path):
    """The validated params; torch runs at their `threads` from here on (a param every stage depends on: the thread
    count changes float results)."""
    import torch

    from pipeline.config import load_config

    cfg = load_config(params)
    torch.set_num_threads(cfg.threads)
    return cfg


@command
def prepare(params: Path = PARAMS, tracking: Tracking = TRACKING) -> None:
    """Load the dataset, split it (seeded, stratified) and write data/prepared with its manifest."""
    from pipeline.config import config_dump
    from pipeline.data import prepare as run
    from pipeline.tracking import run_tags

    cfg = _config(params)
    tracker = tracker_for(cfg, tracking)
    manifest = run(cfg.data, cfg.seed, DATA)
    counts = {s: v["images"] for s, v in manifest["splits"].items()}
    with tracker.run("prepare", tags=run_tags(study_root(), "prepare"),
                     params={"seed": cfg.seed, "data": config_dump(cfg.data)}):
        tracker.log_metrics({f"{s}_images": n for s, n in counts.items()})
        tracker.log_artifact(DATA / "manifest.json")
    typer.echo(f"prepared {manifest['dataset']}: {counts}, shape {manifest['shape']}, sha256 {manifest['sha256'][:12]}")


@command
def evaluator(params: Path = PARAMS, tracking: Tracking = TRACKING) -> None:
    """Train the evaluator CNN on the train split; write its accuracy and the real-vs-real floor."""
    from pipeline.clock import CLOCK
    from pipeline.data import load
    from pipeline.evaluate.evaluator import load_evaluator, train_evaluator
    from pipeline.evaluate.metrics import real_floor
    from pipeline.io import write_json

    cfg = _config(params)
    data = load(DATA)
    model_path = Path("models/evaluator.pt")
    metrics = train_evaluator(cfg, data, model_path, Path("runs/evaluator"), Path("checkpoints/evaluator.ckpt"),
                              tracker_for(cfg, tracking), study_root())
    metrics["real_vs_real"] = real_floor(load_evaluator(model_path), data, cfg.evaluate, cfg.seed)
    write_json(Path("metrics/evaluator.json"), metrics)
    write_json(Path("runs/evaluator/profile.json"), CLOCK.profile())  # its wall time, for the next study's estimate
    typer.echo(f"evaluator test accuracy {metrics['test_accuracy']:.4f}; "
               f"real-vs-real FID {metrics['real_vs_real']['fid']:.3f}")


SEED = typer.Option(None, "--seed", help="One of params.yaml's seeds (default: the first).")


def _train(name: str, family: str, family_loop, seed: int | None, params: Path, tracking: Tracking) -> None:
    from pipeline.clock import CLOCK
    from pipeline.models import run_name
    from pipeline.train import distributed
    from pipeline.train.session import TrainPaths, run_session

    with CLOCK.phase("setup"):
        cfg = _train_config(name, family, seed, params)
        run = run_name(name, cfg.seed)
        if cfg.train.processes > 1 and not distributed.launched():
            return _torchrun(cfg.train.processes, family, name, cfg.seed, params, tracking, run)
        data, judge, tracker = _train_setup(name, cfg, tracking, main=distributed.launched_rank() == 0)
    try:
        run_session(family_loop, name, cfg, data, TrainPaths.for_model(run), tracker, study_root(), judge=judge)
    finally:
        distributed.stop()
    if distributed.launched_rank() == 0:
        typer.echo(f"trained {name} (seed {cfg.seed}) -> models/{run}.pt")


def _train_config(name: str, family: str, seed: int | None, params: Path):
    from pipeline.models import TRAIN_STAGE, spec

    cfg = _config(params)
    if spec(name).family != family:
        other = TRAIN_STAGE[spec(name).family].replace("_", "-")
        raise StudyError(f"'{name}' is a {spec(name).family}: train it with `{other} {name}`")
    cfg.model(name)  # listed in params.yaml?
    return cfg.with_seed(seed)


def _train_setup(name: str, cfg, tracking: Tracking, main: bool):
    """Data, the judge of a generative model's curve (the evaluator, embedding the real images once) and the
    tracker; in a data-parallel run only rank 0 (`main`) measures the curve and records to MLflow."""
    from pipeline.data import load
    from pipeline.models import spec
    from pipeline.models.base import Generative
    from pipeline.tracking import NullTracker

    data = load(DATA)
    judge = None
    if main and issubclass(spec(name).build, Generative):  # its curve is measured in the evaluator's feature space
        from pipeline.evaluate.evaluator import load_evaluator
        from pipeline.evaluate.metrics import judge_for
        from pipeline.train.common import resolve_device

        device = resolve_device(cfg.device)
        judge = judge_for(load_evaluator(Path("models/evaluator.pt")), data, cfg.evaluate, cfg.seed, device)
    return data, judge, tracker_for(cfg, tracking) if main else NullTracker()


def _torchrun(processes: int, family: str, name: str, seed: int, params: Path, tracking: Tracking, run: str) -> None:
    """The same command in `processes` processes under PyTorch's launcher (torchrun, standalone rendezvous on a
    free local port). Their output passes through; torchrun's own failure report goes to
    checkpoints/<run>.torchrun.log and the stage fails with one line (a killed process included; rerunning resumes
    from the last checkpoint)."""
    import subprocess
    import sys

    from pipeline.models import TRAIN_STAGE

    command = TRAIN_STAGE[family].replace("_", "-")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
           "-m", "stages", command, name, "--seed", str(seed), "--params", str(params), "--tracking", tracking.value]
    log = Path("checkpoints") / f"{run}.torchrun.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) as proc, log.open("w") as out:
        launcher_report = False
        for line in proc.stderr:  # type: ignore[union-attr]
            out.write(line)
            if line.startswith("error: "):
                errors.append(line.strip())
                continue
            launcher_report = launcher_report or "torch.distributed" in line or line.startswith(("Traceback", "["))
            if not launcher_report:
                typer.echo(line, err=True, nl=False)
    if proc.returncode != 0:
        if errors:
            raise StudyError(errors[0].removeprefix("error: "))
        raise StudyError(f"{TRAIN_STAGE[family]}@{run}: a training process failed under torchrun (exit "
                         f"{proc.returncode}; its report: {log}); rerun to resume from the last checkpoint")
    log.unlink(missing_ok=True)
    typer.echo(f"trained {name} (seed {seed}) in {processes} processes -> models/{run}.pt")


@command
def train_ae(name: str = typer.Argument(..., help="An autoencoder listed in params.yaml."), seed: int = SEED,
             params: Path = PARAMS, tracking: Tracking = TRACKING) -> None:
    """Train one autoencoder with the autoencoder loop (resumes from checkpoints/<name>-<seed>.ckpt)."""
    from pipeline.train.autoencoder import train_autoencoder

    _train(name, "autoencoder", train_autoencoder, seed, params, tracking)


@command
def train_gan(name: str = typer.Argument(..., help="A GAN listed in params.yaml."), seed: int = SEED,
              params: Path = PARAMS, tracking: Tracking = TRACKING) -> None:
    """Train one GAN with the GAN loop (resumes from checkpoints/<name>-<seed>.ckpt)."""
    from pipeline.train.gan import train_gan as gan_loop

    _train(name, "gan", gan_loop, seed, params, tracking)


@command
def train_diffusion(name: str = typer.Argument(..., help="A diffusion model listed in params.yaml."), seed: int = SEED,
                    params: Path = PARAMS, tracking: Tracking = TRACKING) -> None:
    """Train one diffusion model with the diffusion loop (resumes from checkpoints/<name>-<seed>.ckpt)."""
    from pipeline.train.diffusion import train_diffusion as diffusion_loop

    _train(name, "diffusion", diffusion_loop, seed, params, tracking)


@command
def evaluate(name: str = typer.Argument(..., help="A trained model listed in params.yaml."), seed: int = SEED,
             params: Path = PARAMS, tracking: Tracking = TRACKING) -> None:
    """Evaluate one trained model: write metrics/<name>-<seed>.json, its grids and arrays under runs/<name>-<seed>/figures and its timing
    and profile under runs/<name>-<seed>/eval."""
    from pipeline.data import load
    from pipeline.evaluate.evaluator import load_evaluator
    from pipeline.evaluate.run import evaluate_model
    from pipeline.models import run_name

    from pipeline.clock import CLOCK

    with CLOCK.phase("setup"):
        cfg = _config(params)
        cfg.model(name)
        cfg = cfg.with_seed(seed)
        run = run_name(name, cfg.seed)
        data, net, tracker = load(DATA), load_evaluator(Path("models/evaluator.pt")), tracker_for(cfg, tracking)
    metrics = evaluate_model(name, cfg, data, Path(f"models/{run}.pt"), net, Path(f"metrics/{run}.json"),
                             Path(f"runs/{run}/eval"), Path(f"runs/{run}/figures"), tracker, study_root())
    shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
    typer.echo(f"{run}: {shown}")


@command
def report(params: Path = PARAMS, tracking: Tracking = TRACKING) -> None:
    """Write reports/README.md from the metrics files, histories and grids (never from MLflow)."""
    from pipeline.report import write_report

    cfg = _config(params)
    from pipeline.tracking import run_tags

    path = write_report(cfg, Path("metrics"), Path("runs"), Path("reports"))
    tracker = tracker_for(cfg, tracking)
    with tracker.run("report", tags=run_tags(study_root(), "report")):
        tracker.log_artifact(path)
    typer.echo(f"wrote {path}")
