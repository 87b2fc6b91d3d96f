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

With params.yaml's `jobs` above 1 (or $STUDY_JOBS), the plan runs as one `dvc --wait-for-lock repro -s STAGE`
process per stage, `jobs` at once, each once the stages it needs are done, the longest chains first (`run_jobs`):
DVC's documented parallel stage execution. Each stage still gets its dvc.lock entry, its cache and its run-cache
record from its own DVC process; an interrupted study resumes as before (finished stages are skipped, trainings
resume from their checkpoints).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from pipeline.progress import expected_seconds, line, read_times
from stages.warm import Server

STARTS = "Running stage '"  # DVC's line as a stage starts: Running stage 'train_gan@dcgan-42':


def plan(args: list[str] = (), root: Path = Path(".")) -> list[str]:
    """The stages `dvc repro ARGS` will run, in its order. ARGS are read by DVC's own parser: targets (a stage, a
    dvc.yaml, with `--glob` a pattern), `--single-item`, `--downstream`, `--pipeline`, `--force`."""
    return list(plan_graph(args, root))


def plan_graph(args: list[str] = (), root: Path = Path(".")) -> dict[str, list[str]]:
    """`plan`'s stages, in its order, each with the planned stages it depends on (a stage downstream of a planned
    one is planned too, so its direct upstream stages are all a schedule needs)."""
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
        return {stage.addressing: [up.addressing for up in ([] if single else graph.successors(stage)) if up in planned]
                for stage in order if stage in planned}


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


# `dvc repro` options a per-stage run can carry (the rest of a plan's arguments only choose the stages); any other
# option (--dry, --pull, --keep-going, ...) runs the study as one `dvc repro ARGS`, one stage at a time
PLANNING = {"targets", "glob", "single_item", "downstream", "pipeline", "all_pipelines", "recursive", "force"}


def parallel_ok(args: list[str]) -> bool:
    """Whether `dvc repro ARGS` can run as one `dvc repro -s STAGE` per planned stage: only planning options."""
    from dvc.cli import parse_args

    given, default = vars(parse_args(["repro", *args])), vars(parse_args(["repro"]))
    return all(given[k] == default[k] for k in given if k not in PLANNING | {"func", "cmd"})


def jobs_setting(params: Path = Path("params.yaml")) -> int:
    """params.yaml's `jobs` (validated with the rest), or $STUDY_JOBS where set."""
    from pipeline.config import load_config

    jobs = load_config(params).jobs
    override = os.environ.get("STUDY_JOBS")
    if override:
        if not override.isdigit() or int(override) < 1:
            raise SystemExit(f"error: STUDY_JOBS must be a whole number of at least 1 (got '{override}')")
        jobs = int(override)
    return jobs


def priorities(graph: dict[str, list[str]], expected: dict[str, float]) -> dict[str, float]:
    """Each stage's own expected time plus the longest chain of planned stages waiting on it: started highest
    first, the long trainings go first and the short stages fill the gaps (longest-processing-time first)."""
    below: dict[str, list[str]] = {s: [] for s in graph}
    for stage, ups in graph.items():
        for up in ups:
            below[up].append(stage)
    memo: dict[str, float] = {}

    def chain(stage: str) -> float:
        if stage not in memo:
            memo[stage] = expected[stage] + max((chain(d) for d in below[stage]), default=0.0)
        return memo[stage]

    return {s: chain(s) for s in graph}


def run_jobs(graph: dict[str, list[str]], times: dict[str, float], jobs: int, env: dict, dvc: str,
             force: bool = False) -> int:
    """Each planned stage as its own `dvc --wait-for-lock repro -s STAGE` (DVC's documented parallel execution:
    every process takes the repository lock only to check and to record its stage, and DVC's read/write locks on
    the stages' deps and outs keep two processes off one file), at most `jobs` at once, each started once the
    planned stages it depends on have succeeded. Their output passes through line by line. A failed stage starts
    nothing more: those in flight finish and the exit status is the first failure's."""
    import queue
    import threading

    expected = dict(zip(graph, expected_seconds(list(graph), times)))
    rank = priorities(graph, expected)
    events: queue.Queue = queue.Queue()
    running: dict[str, subprocess.Popen] = {}
    started: list[str] = []
    done: set[str] = set()
    status, t0 = 0, time.time()

    def follow(name: str, proc: subprocess.Popen) -> None:
        for text in proc.stdout:  # type: ignore[union-attr]
            events.put((name, text))
        events.put((name, None))

    try:
        while True:
            if status == 0:
                ready = [s for s in graph if s not in started and all(u in done for u in graph[s])]
                for stage in sorted(ready, key=lambda s: -rank[s])[: max(0, jobs - len(running))]:
                    started.append(stage)
                    cmd = [dvc, "--wait-for-lock", "repro", "--single-item", *(["--force"] if force else []), stage]
                    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
                    running[stage] = proc
                    threading.Thread(target=follow, args=(stage, proc), daemon=True).start()
                    print(line(list(graph), times, started, time.time() - t0, finished=sorted(done), jobs=jobs,
                               running=len(running)), file=sys.stderr, flush=True)
            if not running:
                break
            name, text = events.get()
            if text is not None:
                print(text, end="", flush=True)
                continue
            code = running.pop(name).wait()
            if code == 0:
                done.add(name)
            elif status == 0:
                status = code
                print(f"make study: {name} failed (exit {code}); the stages in flight finish, no other starts "
                      f"(rerun to resume)", file=sys.stderr, flush=True)
    except KeyboardInterrupt:  # the terminal sent it to every DVC process too: wait for them to stop their stages
        for proc in running.values():
            proc.wait()
        return 130
    return status


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    jobs = jobs_setting()
    server = Server()  # started first: it imports while DVC plans
    with server as env:
        stale = prune_lock()
        if stale:
            print(f"make study: {len(stale)} dvc.lock entr{'y' if len(stale) == 1 else 'ies'} of stages no longer in "
                  f"dvc.yaml dropped", flush=True)
        graph, times = plan_graph(args), read_times()
        stages = list(graph)
        beside = Path(sys.executable).parent / "dvc"  # this environment's DVC
        dvc_bin = str(beside) if beside.is_file() else "dvc"
        if jobs > 1 and not parallel_ok(args):
            print("make study: these dvc repro options run as one dvc repro, one stage at a time", flush=True)
            jobs = 1
        print(f"make study: {len(stages)} stage{'' if len(stages) == 1 else 's'} to run, {jobs} at a time", flush=True)
        if jobs > 1:
            from dvc.cli import parse_args

            status = run_jobs(graph, times, jobs, env, dvc_bin, force=parse_args(["repro", *args]).force)
        else:
            status = _one_repro(args, stages, times, env, dvc_bin)
        ran = server.stages()
    cold = [s for s in ran if s["cold"]]
    if ran:
        print(f"make study: {len(ran) - len(cold)} of {len(ran)} stage commands started warm"
              + (f" ({len(cold)} on their own: {cold[0]['cold']})" if cold else ""), flush=True)
    return status


def _one_repro(args: list[str], stages: list[str], times: dict[str, float], env: dict, dvc_bin: str) -> int:
    """`dvc repro ARGS` in one process, its output passed through, a progress line as each planned stage starts."""
    t0 = time.time()
    dvc = subprocess.Popen([dvc_bin, "repro", *args], stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
    started: list[str] = []
    try:
        for text in dvc.stdout:  # type: ignore[union-attr]
            print(text, end="", flush=True)
            if text.startswith(STARTS) and (stage := text[len(STARTS):].rstrip().rstrip(":").rstrip("'")) in stages:
                started.append(stage)
                print(line(stages, times, started, time.time() - t0), file=sys.stderr, flush=True)
        return dvc.wait()
    except KeyboardInterrupt:  # the terminal sent it to DVC too: wait for DVC to stop its stage
        return dvc.wait()


if __name__ == "__main__":
    sys.exit(main())
