"""`python -m stages.sweep`: the learning-rate sweep's DVC experiments. `queue` puts one experiment per model and
grid value in DVC's queue (every generator of params.yaml by default), `collect` reads the finished ones into
metrics/lr_sweep.json.

Not a pipeline stage (and not imported by one): `make sweep` queues, runs the queue, then collects.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from stages import one_line_errors, study_root

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
@one_line_errors
def queue(models: list[str] = typer.Argument(None, help="Models to sweep (default: every generator of params.yaml)."),
          grid: str = typer.Option("0.0003 0.001 0.003 0.01 0.03", help="Learning rates, space-separated."),
          seed: int = typer.Option(None, help="The selection seed (default: the first of pipeline.tuning's)."),
          stage: str = typer.Option("lr", help="lr: the learning-rate grid; batch: batch sizes 16, 32 and 64 at each "
                                    "model's best learning rate of metrics/lr_sweep.json."),
          dry_run: bool = typer.Option(False, "--dry-run", help="Print the commands instead of queueing.")) -> None:
    """Queue one DVC experiment per model and grid value (`lr-<model>-<value>`; `bs-<model>-<batch>` in the batch
    stage; `-s<seed>` at the second selection seed), replacing an experiment of that name; `dvc queue start` runs
    them."""
    import subprocess

    from pipeline import StudyError
    from pipeline.config import read_params
    from pipeline.tuning import BATCH_GRID, SELECTION_SEEDS, batch_size, queue_commands, swept

    if stage not in ("lr", "batch"):
        raise StudyError(f"--stage '{stage}': lr or batch")
    params = read_params((study_root() / "params.yaml").read_text())
    tuned = swept(params)
    for m in models or []:
        if m not in tuned:
            raise StudyError(f"'{m}' is not a generator of params.yaml; the sweep tunes {', '.join(tuned)}")
    seed = SELECTION_SEEDS[0] if seed is None else seed
    if seed not in SELECTION_SEEDS:
        raise StudyError(f"--seed {seed} is not a selection seed ({', '.join(map(str, SELECTION_SEEDS))}): a grid "
                         "cell at a reporting seed would be both the choice and the result")
    try:
        values = sorted({float(v) for v in grid.split()})
    except ValueError:
        raise StudyError(f"--grid '{grid}': learning rates, space-separated numbers") from None
    if not values or any(v <= 0 for v in values):
        raise StudyError(f"--grid '{grid}': at least one learning rate, each above 0")
    suffix = "" if seed == SELECTION_SEEDS[0] else f"-s{seed}"
    chosen = {m: tuned[m] for m in models or tuned}
    batches = None
    if stage == "batch":  # at each model's best learning rate; its batch size in use is that grid's cell already
        summary_path = study_root() / "metrics" / "lr_sweep.json"
        best = json.loads(summary_path.read_text()).get("best", {}) if summary_path.is_file() else {}
        missing = [m for m in chosen if m not in best]
        if missing:
            raise StudyError(f"no learning-rate grid in {summary_path.name} for {', '.join(missing)}: run `make "
                             "sweep` (the lr stage) for them first")
        values = [float(best[m]) for m in chosen]
        batches = {m: [b for b in BATCH_GRID if b != batch_size(m, params[chosen[m]][m])] for m in chosen}
    for cmd in queue_commands(chosen, values, seed, suffix, batches):
        if dry_run:
            typer.echo(" ".join(cmd))
            continue
        subprocess.run(["dvc", "exp", "remove", "-q", cmd[cmd.index("-n") + 1]], cwd=study_root(),
                       capture_output=True)  # an earlier run of this cell, if any
        done = subprocess.run(cmd, cwd=study_root())
        if done.returncode:
            raise StudyError(f"{' '.join(cmd)} failed (exit {done.returncode})")


@app.command()
@one_line_errors
def collect(out: Path = typer.Option(Path("metrics/lr_sweep.json"), help="Where the summary goes.")) -> None:
    """Read every lr-<model>-<value> experiment (params and metrics from its git ref) into one table, keeping the
    cells of the summary already there (same budget) that no experiment here replaces."""
    from pipeline.tuning import SELECTION_SEEDS
    from pipeline.tuning import collect as run

    summary = run(study_root(), out)
    if "dropped" in summary:
        typer.echo(f"warning: {summary['dropped']}", err=True)
    for model, best in summary["best"].items():
        typer.echo(f"{model}: best lr {best} (validation FID {summary['results'][model][best]['fid']:.1f}), "
                   f"params.yaml uses {summary['used'].get(model, '?')}")
    second = SELECTION_SEEDS[-1]
    for model, todo in summary.get("next", {}).items():  # what the grid's rules ask next (pipeline.tuning.decide)
        if "extend" in todo:
            typer.echo(f"{model}: best at an end of the grid; next: make sweep SWEEP_MODELS={model} "
                       f"LR_GRID={todo['extend']}")
        if "batch" in todo:
            b = todo["batch"]
            typer.echo(f"{model}: batch size {b['set']} wins at the best learning rate; next: set "
                       f"batch_size: {b['set']} in params.yaml, then make sweep SWEEP_MODELS={model} "
                       f"LR_GRID='{' '.join(b['lr_grid'])}' (the learning rate's neighbours at that batch)")
        if "batch_tie" in todo:
            typer.echo(f"{model}: batch {todo['batch_tie'][0]} is not ahead of {todo['batch_tie'][1]} by more than "
                       f"its sample-set spread; next: make sweep SWEEP_MODELS={model} SWEEP_STAGE=batch "
                       f"SELECTION_SEED={second}")
        if "tie" in todo:
            typer.echo(f"{model}: {todo['tie'][0]} is not ahead of {todo['tie'][1]} by more than its sample-set "
                       f"spread; next: make sweep SWEEP_MODELS={model} LR_GRID='{' '.join(todo['tie'])}' "
                       f"SELECTION_SEED={second}")


if __name__ == "__main__":
    sys.exit(app(standalone_mode=True))
