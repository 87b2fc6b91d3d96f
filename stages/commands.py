"""The commands, one per DVC stage. Only wiring: the work is in `pipeline`."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline import StudyError
from stages import DATA, PARAMS, TRACKING, Tracking, command, study_root, tracker_for


def _config(params: Path):
    from pipeline.config import load_config

    return load_config(params)


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
    typer.echo(f"evaluator test accuracy {metrics['test_accuracy']:.4f}; "
               f"real-vs-real FID {metrics['real_vs_real']['fid']:.3f}")


SEED = typer.Option(None, "--seed", help="One of params.yaml's seeds (default: the first).")


def _train(name: str, family: str, family_loop, seed: int | None, params: Path, tracking: Tracking) -> None:
    from pipeline.clock import CLOCK
    from pipeline.models import run_name
    from pipeline.train.session import TrainPaths, run_session

    with CLOCK.phase("setup"):
        cfg, data, judge, tracker = _train_setup(name, family, seed, params, tracking)
    run = run_name(name, cfg.seed)
    run_session(family_loop, name, cfg, data, TrainPaths.for_model(run), tracker, study_root(), judge=judge)
    typer.echo(f"trained {name} (seed {cfg.seed}) -> models/{run}.pt")


def _train_setup(name: str, family: str, seed: int | None, params: Path, tracking: Tracking):
    """Config, data, the judge of a generative model's curve (the evaluator, embedding the real images once) and
    the tracker."""
    from pipeline.data import load
    from pipeline.models import TRAIN_STAGE, spec
    from pipeline.models.base import Generative

    cfg = _config(params)
    if spec(name).family != family:
        other = TRAIN_STAGE[spec(name).family].replace("_", "-")
        raise StudyError(f"'{name}' is a {spec(name).family}: train it with `{other} {name}`")
    cfg.model(name)  # listed in params.yaml?
    cfg = cfg.with_seed(seed)
    data = load(DATA)
    judge = None
    if issubclass(spec(name).build, Generative):  # its curve is measured in the evaluator's feature space
        from pipeline.evaluate.evaluator import load_evaluator
        from pipeline.evaluate.metrics import judge_for
        from pipeline.train.common import resolve_device

        device = resolve_device(cfg.device)
        judge = judge_for(load_evaluator(Path("models/evaluator.pt")), data, cfg.evaluate, cfg.seed, device)
    return cfg, data, judge, tracker_for(cfg, tracking)


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
def evaluate(name: str = typer.Argument(..., help="A trained model listed in params.yaml."), seed: int = SEED,
             params: Path = PARAMS, tracking: Tracking = TRACKING) -> None:
    """Evaluate one trained model: write metrics/<name>-<seed>.json and its grids under runs/<name>-<seed>/eval."""
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
                             Path(f"runs/{run}/eval"), tracker, study_root())
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
