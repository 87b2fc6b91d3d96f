"""`python -m stages.sweep`: collect the learning-rate sweep's DVC experiments into metrics/lr_sweep.json.

Not a pipeline stage (and not imported by one): `make sweep` queues and runs the experiments, then calls this.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from stages import one_line_errors, study_root

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


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
        if "tie" in todo:
            typer.echo(f"{model}: {todo['tie'][0]} is not ahead of {todo['tie'][1]} by more than its sample-set "
                       f"spread; next: make sweep SWEEP_MODELS={model} LR_GRID='{' '.join(todo['tie'])}' "
                       f"SELECTION_SEED={second}")


if __name__ == "__main__":
    sys.exit(app(standalone_mode=True))
