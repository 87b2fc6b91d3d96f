"""`python -m stages.sweep`: the tuning protocol's DVC experiments (pipeline/tuning.py). `run` (what `make sweep`
calls) carries the whole protocol through for every generator of params.yaml: the learning-rate grid, its
extensions and close calls, the batch-size stage, the learning rate's neighbours at a new batch size, and finally
each model's best values written into params.yaml. It plans from what is already done, so a rerun (after an
interruption, or on a wider grid) runs only the cells still missing. `queue` and `collect` are its two halves, by
hand: queue one experiment per model and grid value, and read the finished ones into metrics/lr_sweep.json.

Not a pipeline stage (and not imported by one).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import typer

from stages import one_line_errors, study_root

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def _grid_values(grid: str) -> list[float]:
    """--grid's learning rates, sorted, or one line naming what is wrong with it."""
    from pipeline import StudyError

    try:
        values = sorted({float(v) for v in grid.split()})
    except ValueError:
        raise StudyError(f"--grid '{grid}': learning rates, space-separated numbers") from None
    if not values or any(v <= 0 for v in values):
        raise StudyError(f"--grid '{grid}': at least one learning rate, each above 0")
    return values


def _check_models(models: list[str] | None, tuned) -> None:
    from pipeline import StudyError

    for m in models or []:
        if m not in tuned:
            raise StudyError(f"'{m}' is not a generator of params.yaml; the sweep tunes {', '.join(tuned)}")


@app.command()
@one_line_errors
def queue(models: list[str] = typer.Argument(None, help="Models to sweep (default: every generator of params.yaml)."),
          grid: str = typer.Option("0.001 0.003 0.01", help="Learning rates, space-separated."),
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
    _check_models(models, tuned)
    seed = SELECTION_SEEDS[0] if seed is None else seed
    if seed not in SELECTION_SEEDS:
        raise StudyError(f"--seed {seed} is not a selection seed ({', '.join(map(str, SELECTION_SEEDS))}): a grid "
                         "cell at a reporting seed would be both the choice and the result")
    values = _grid_values(grid)
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


def _queue_tasks(root: Path) -> list[tuple[str, str, str]]:
    """(task id, experiment name, status) of each task `dvc queue status` lists, after a first ("", "", "workers
    <active> <idle>"): how many queue workers are running a task and how many wait for one."""
    import re
    import subprocess

    out = subprocess.run(["dvc", "queue", "status"], cwd=root, capture_output=True, text=True).stdout
    workers = re.search(r"Worker status: (\d+) active, (\d+) idle", out)
    tasks = [("", "", f"workers {workers.group(1)} {workers.group(2)}" if workers else "workers 0 0")]
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[-1] in ("Queued", "Running", "Success", "Failed") and parts[0] != "Task":
            tasks.append((parts[0], parts[1], parts[-1]))
    return tasks


def _alive(root: Path, task: str) -> bool:
    """Whether a Running task still has its process: DVC keeps the pid of each run's `dvc exp exec-run` beside its
    output; an interrupted machine leaves the task listed as Running with no process."""
    import os

    for pid_file in (root / ".dvc" / "tmp" / "exps" / "run").glob(f"{task}*/*.pid"):
        try:
            pid = int(pid_file.read_text().strip())
            if Path("/proc").is_dir():  # not a recycled pid: the process is DVC's runner
                return b"exec-run" in Path(f"/proc/{pid}/cmdline").read_bytes()
            os.kill(pid, 0)
            return True
        except (ValueError, OSError):
            return False
    return False


def _drain(root: Path, jobs: int, finished: Callable[[], None] | None = None) -> None:
    """Start `jobs` queue workers (their stages run torch at params.yaml's `threads`; OMP_NUM_THREADS, cores / jobs
    unless set, sizes the native libraries' own pools) and wait
    until nothing is queued or running, calling `finished` each time a cell has finished (so the summary holds
    every result as it comes, not only at the end of a round: experiment refs stay on the machine that ran them,
    the summary is a file to commit). Tasks left Running by an interrupted machine are removed first (their cells
    are planned again): only when no worker is active, since a live task is also listed Running before its run
    starts and while its results are committed, with no process of its own. A worker that exits while cells are
    still queued (DVC's file-system broker: one worker can read a message file another is writing, and stop on
    it) is started again."""
    import os
    import subprocess
    import time

    from pipeline.tuning import experiment_refs

    def tasks_now() -> list[tuple[str, str, str]]:
        tasks = _queue_tasks(root)
        if tasks[0][2].split()[1] != "0":  # a worker is running a task
            return tasks
        stale = [(task, name) for task, name, status in tasks if status == "Running" and not _alive(root, task)]
        for task, name in stale:  # a task Running with no worker at all: its machine or worker was stopped
            subprocess.run(["dvc", "queue", "kill", task], cwd=root, capture_output=True)
            subprocess.run(["dvc", "queue", "remove", task], cwd=root, capture_output=True)
            typer.echo(f"{name}: left Running by an interrupted run, no process: removed (planned again)")
        return _queue_tasks(root) if stale else tasks

    if not any(status in ("Queued", "Running") for _, _, status in tasks_now()):
        return
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=root, env=env, check=False)
    started = time.monotonic()  # a worker just started is listed only once it has joined
    last, done = None, len(experiment_refs(root))
    while True:
        if finished is not None and len(experiment_refs(root)) != done:
            done = len(experiment_refs(root))
            finished()
        tasks = tasks_now()
        waiting = [n for _, n, st in tasks if st == "Queued"]
        running = [n for _, n, st in tasks if st == "Running"]
        if not waiting and not running:
            if finished is not None and len(experiment_refs(root)) != done:
                finished()
            return
        workers = sum(int(n) for n in tasks[0][2].split()[1:])  # running a task or waiting for one
        if waiting and workers < jobs and time.monotonic() - started > 120:  # it starts only the missing ones
            typer.echo(f"{jobs - workers} queue worker(s) gone with cells queued: started again")
            subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=root, env=env, check=False)
            started = time.monotonic()
        if (len(waiting), tuple(running)) != last:
            typer.echo(f"{len(waiting)} queued, running: {', '.join(running) or '-'}")
            last = (len(waiting), tuple(running))
        time.sleep(60)  # each `dvc queue status` costs a few CPU seconds


def _summary(root: Path, out: Path) -> dict | None:
    """The protocol's state: the experiments here and the summary at `out` (cells run elsewhere), settled against
    params.yaml as it is now; None before any cell."""
    from pipeline.config import read_params
    from pipeline.tuning import collect as gather
    from pipeline.tuning import experiment_refs, settle

    if experiment_refs(root):
        return gather(root, out)
    if out.is_file():
        params = read_params((root / "params.yaml").read_text())
        return settle(json.loads(out.read_text()), params, root / "metrics")
    return None


@app.command()
@one_line_errors
def run(models: list[str] = typer.Argument(None, help="Models to tune (default: every generator of params.yaml)."),
        grid: str = typer.Option("0.001 0.003 0.01", help="The learning-rate grid, space-separated (a best value at "
                                 "an end extends it one step on the 1-3-10 ladder, and again while it wins)."),
        jobs: int = typer.Option(2, min=1, help="Cells run at once (each at cores / jobs threads)."),
        until: str = typer.Option("batch", help="lr: stop once the learning-rate grid is settled; batch: go on "
                                  "through the batch-size stage."),
        rounds: int = typer.Option(None, min=0, help="Run at most this many rounds of cells, then stop (a later "
                                   "run goes on from there)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the next round's cells and edits, run none.")
        ) -> None:
    """The whole tuning protocol, round after round until its rules ask for nothing more: queue the cells it
    still needs, run them, collect, set what it decided in params.yaml. Resumes: cells already run are not rerun."""
    import subprocess

    from pipeline import StudyError
    from pipeline.config import read_params
    from pipeline.tuning import cell_command, cell_name, plan, set_params, swept

    root = study_root()
    if until not in ("lr", "batch"):
        raise StudyError(f"--until '{until}': lr or batch")
    values = _grid_values(grid)
    params_path, out = root / "params.yaml", root / "metrics" / "lr_sweep.json"
    tuned = list(swept(read_params(params_path.read_text())))
    _check_models(models, tuned)
    chosen = list(models or tuned)
    tried: set[tuple[str, str]] = set()  # (cell, its model's params): ran in this call
    if not dry_run:
        _drain(root, jobs, lambda: _summary(root, out))  # cells an interrupted run left in the queue
    while True:
        params = read_params(params_path.read_text())
        summary = _summary(root, out)
        cells, edits = plan(summary, params, chosen, values, until)
        if dry_run:
            for cell in cells:
                typer.echo(" ".join(cell_command(cell, params)))
            for m, kv in edits.items():
                typer.echo(f"set {m}: {', '.join(f'{k} {v:g}' for k, v in kv.items())}")
            return
        if edits:
            for line in set_params(params_path, edits):
                typer.echo(f"params.yaml: {line}")
            continue
        if not cells:
            break
        if rounds is not None and rounds <= 0:
            typer.echo(f"stopped with {len(cells)} cell(s) still to run (`--dry-run` lists them)")
            break
        rounds = None if rounds is None else rounds - 1
        names = [cell_name(kind, m, lr if kind == "lr" else batch, seed) for kind, m, lr, batch, seed in cells]
        blocks = swept(params)  # a name runs again at a new setting (the lr neighbours at a batch size that won)
        keys = [(n, json.dumps(params[blocks[c[1]]][c[1]], sort_keys=True, default=str)) for n, c in zip(names, cells)]
        again = [n for n, key in zip(names, keys) if key in tried]
        if again:
            raise StudyError(f"{', '.join(again)}: ran and left no result (its log: dvc queue logs {again[0]})")
        tried.update(keys)
        typer.echo(f"queueing {len(cells)} cell(s): {', '.join(names)}")
        for cell, name in zip(cells, names):
            subprocess.run(["dvc", "exp", "remove", "-q", name], cwd=root, capture_output=True)  # another setting's
            done = subprocess.run(cell_command(cell, params), cwd=root, capture_output=True, text=True)
            if done.returncode:
                raise StudyError(f"queueing {name} failed: {(done.stderr or done.stdout).strip()[-300:]}")
        _drain(root, jobs, lambda: _summary(root, out))
        _diverged(root, out, dict(zip(names, cells)), params)
    _print_summary(summary)


def _diverged(root: Path, out: Path, cells: dict, params: dict) -> None:
    """Record the round's cells whose training diverged (the training loop's error in the task's log) as such in
    the summary: a learning rate too high to train is the grid's answer for that cell, not a run to repeat. A cell
    that failed otherwise, or at the second selection seed, is left for the next round to report."""
    import subprocess

    from pipeline.tuning import SELECTION_SEEDS, record_diverged

    for task, name, status in _queue_tasks(root):
        if status != "Failed" or name not in cells or cells[name][4] != SELECTION_SEEDS[0]:
            continue
        log = subprocess.run(["dvc", "queue", "logs", task], cwd=root, capture_output=True, text=True).stdout
        why = next((line.strip() for line in log.splitlines() if "training diverged" in line), None)
        if why:
            record_diverged(out, cells[name], params, why[-300:])
            typer.echo(f"{name}: training diverged: recorded as such")


def _print_summary(summary: dict | None) -> None:
    for model, best in (summary or {}).get("best", {}).items():
        typer.echo(f"{model}: best lr {best} (validation FID {summary['results'][model][best]['fid']:.1f})"
                   + (f", batch size {summary['batch_best'][model]}" if model in summary.get("batch_best", {}) else ""))


@app.command()
@one_line_errors
def collect(out: Path = typer.Option(Path("metrics/lr_sweep.json"), help="Where the summary goes.")) -> None:
    """Read every lr-<model>-<value> experiment (params and metrics from its git ref) into one table, keeping the
    cells of the summary already there (same budget) that no experiment here replaces."""
    from pipeline.tuning import collect as gather

    summary = gather(study_root(), out)
    if "dropped" in summary:
        typer.echo(f"warning: {summary['dropped']}", err=True)
    for model, best in summary["best"].items():
        typer.echo(f"{model}: best lr {best} (validation FID {summary['results'][model][best]['fid']:.1f}), "
                   f"params.yaml uses {summary['used'].get(model, '?')}")
    for model, todo in summary.get("next", {}).items():  # what the rules ask next (pipeline.tuning.decide)
        asks = [f"lr {todo['extend']} (best at an end of the grid)" if "extend" in todo else "",
                f"lr {' and '.join(todo['tie'])} at the second selection seed (a close call)" if "tie" in todo else "",
                f"batch {' and '.join(todo['batch_tie'])} at the second selection seed" if "batch_tie" in todo else "",
                f"batch size {todo['batch']['set']}, then lr {' and '.join(todo['batch']['lr_grid'])} at it"
                if "batch" in todo else ""]
        typer.echo(f"{model}: the rules ask for {'; '.join(a for a in asks if a)}: `make sweep` runs it")

if __name__ == "__main__":
    sys.exit(app(standalone_mode=True))
