"""`python -m stages.study [DVC REPRO ARGS]` (`make study`): `dvc repro`, saying which stage of how many is running
and about how long the whole study has left.

Before DVC starts, dvc.lock loses the entries of stages dvc.yaml no longer has (`prune_lock`). Then the plan: the
stages `dvc repro` will run, in its own order, each one DVC sees changed (deps, params, command, missing outputs on
a fresh clone) or downstream of one that is planned (`dvc repro --dry` stops at the first stage whose inputs do not
exist yet, so it cannot plan a fresh clone). Then DVC runs with its output passed through line by line; as a stage
starts, one more line gives how many have started and the time left (pipeline/progress.py), beside the stage's own progress
bar. The stages start warm (stages/warm.py): forked from one process that has imported PyTorch, MLflow and the rest
once. The exit status is DVC's. Not a pipeline stage (and
not imported by one).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from pipeline.progress import line, read_times
from stages.warm import Server

STARTS = "Running stage '"  # DVC's line as a stage starts: Running stage 'train_gan@dcgan-42':


def plan(args: list[str] = (), root: Path = Path(".")) -> list[str]:
    """The stages `dvc repro ARGS` will run, in its order. ARGS are read by DVC's own parser: targets (a stage, a
    dvc.yaml, with `--glob` a pattern), `--single-item`, `--downstream`, `--pipeline`, `--force`."""
    from dvc.cli import parse_args
    from dvc.repo import Repo
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    opts = parse_args(["repro", *args])
    with Repo(str(root)) as repo, repo.lock:  # as `dvc status` does: stage checks read under the repo's lock
        graph = get_active_graph(repo.index.graph)
        single = opts.single_item and not (opts.pipeline or opts.all_pipelines)  # as DVC reads them
        if opts.all_pipelines:
            order = plan_repro(graph, None)
        else:
            targets = collect_stages(repo, opts.targets or ["dvc.yaml"], recursive=opts.recursive, glob=opts.glob)
            order = targets if single else plan_repro(graph, targets, pipeline=opts.pipeline,
                                                      downstream=opts.downstream and not opts.pipeline)
        planned: set = set()
        for stage in order:  # each stage after those it depends on (its successors in DVC's graph)
            ups = [] if single else graph.successors(stage)
            if opts.force or any(up in planned for up in ups) or stage.changed():
                planned.add(stage)
        return [stage.addressing for stage in order if stage in planned]


def prune_lock(root: Path = Path(".")) -> list[str]:
    """Drop the dvc.lock entries of stages dvc.yaml no longer has (a model or seed taken out, a stage renamed):
    DVC keeps them forever, and rereads and rewrites the whole lock file after every stage it runs (a round-trip
    YAML parse, the slowest part of its own work between stages), so they would cost time at every stage of every
    study. Should a stage come back, DVC's run cache restores its outputs without running it."""
    import yaml
    from dvc.repo import Repo
    from dvc.utils.serialize import modify_yaml

    lock = root / "dvc.lock"
    if not lock.is_file():
        return []
    with Repo(str(root)) as repo, repo.lock:
        here = (root / "dvc.yaml").resolve()
        current = {stage.name for stage in repo.index.stages if Path(stage.dvcfile.path).resolve() == here}
        listed = (yaml.load(lock.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {})
        stale = [name for name in listed.get("stages", {}) if name not in current]
        if stale:
            with modify_yaml(lock) as data:
                for name in stale:
                    del data["stages"][name]
    return stale


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    server = Server()  # started first: it imports while DVC plans
    with server as env:
        stale = prune_lock()
        if stale:
            print(f"make study: {len(stale)} dvc.lock entr{'y' if len(stale) == 1 else 'ies'} of stages no longer in "
                  f"dvc.yaml dropped", flush=True)
        stages, times = plan(args), read_times()
        print(f"make study: {len(stages)} stage{'' if len(stages) == 1 else 's'} to run", flush=True)
        t0 = time.time()
        beside = Path(sys.executable).parent / "dvc"  # this environment's DVC
        dvc = subprocess.Popen([str(beside) if beside.is_file() else "dvc", "repro", *args], stdout=subprocess.PIPE,
                               text=True, bufsize=1, env=env)
        started: list[str] = []
        try:
            for text in dvc.stdout:
                print(text, end="", flush=True)
                if text.startswith(STARTS) and (stage := text[len(STARTS):].rstrip().rstrip(":").rstrip("'")) in stages:
                    started.append(stage)
                    print(line(stages, times, started, time.time() - t0), file=sys.stderr, flush=True)
            status = dvc.wait()
        except KeyboardInterrupt:  # the terminal sent it to DVC too: wait for DVC to stop its stage
            status = dvc.wait()
        ran = server.stages()
    cold = [s for s in ran if s["cold"]]
    if ran:
        print(f"make study: {len(ran) - len(cold)} of {len(ran)} stage commands started warm"
              + (f" ({len(cold)} on their own: {cold[0]['cold']})" if cold else ""), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
