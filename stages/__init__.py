"""The study's DVC stages as one Typer app: `python -m stages <command>`.

Each command parses its arguments, loads the validated params, calls one library function and exits. Paths
follow the repository layout (data/prepared, models/, runs/, metrics/, reports/) relative to the working
directory, which DVC sets to the repository (or experiment) root. Bad input exits with status 2 and one line.
"""

from __future__ import annotations

import functools
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Callable

import typer

from pipeline import StudyError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Stages of the autoencoder, GAN & diffusion study (run them all with `dvc repro`).")

PARAMS = typer.Option(Path("params.yaml"), "--params", help="The study's parameters file.")
class Tracking(str, Enum):
    mlflow = "mlflow"
    none = "none"


TRACKING = typer.Option(Tracking.mlflow, "--tracking", help="Where runs are recorded.")
DATA = Path("data/prepared")


def study_root() -> Path:
    """Where mlflow.db lives: the real repository root, also when DVC runs an experiment in a temp copy."""
    return Path(os.environ.get("DVC_ROOT") or ".").resolve()


def tracker_for(cfg, tracking: Tracking):
    from pipeline.tracking import MlflowTracker, NullTracker

    if tracking == Tracking.none:
        return NullTracker()
    return MlflowTracker(study_root(), cfg.tracking.experiment, log_model=cfg.tracking.log_model == "pytorch")


def one_line_errors(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from pipeline.clock import CLOCK

        CLOCK.mark_startup()  # interpreter, imports and argument parsing: the stage's profile.json shows it
        try:
            return fn(*args, **kwargs)
        except StudyError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: rerun the same command to resume from the last checkpoint", err=True)
            raise typer.Exit(130) from None

    return wrapper


def command(fn: Callable) -> Callable:
    return app.command(name=fn.__name__.replace("_", "-"))(one_line_errors(fn))


from stages import commands  # noqa: E402,F401  (registers the commands)


def run(argv: list[str] | None = None) -> int:
    """`python -m stages ...` as a function returning the exit status; usage errors are one line too."""
    try:
        status = app(args=argv, prog_name="python -m stages", standalone_mode=False)
        return status if isinstance(status, int) else 0  # a command's typer.Exit(n) comes back as n
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return 130
    except typer.TyperException as exc:  # a missing or bad argument or option, an unknown command
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(exc.format_message(), err=True)
        else:
            typer.echo(f"error: {exc.format_message()} (see python -m stages --help)", err=True)
        return getattr(exc, "exit_code", 2)


def main() -> None:
    sys.exit(run())
