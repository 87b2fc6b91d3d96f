"""`python -m stages.plan PATH`: the stages `dvc repro` is about to run, in its order, one a line, into PATH.

Not a pipeline stage (and not imported by one): `make study` writes the plan before `dvc repro`, and each stage
reads it to say which stage of how many it is (pipeline/progress.py). A stage is planned when DVC sees it changed
(its deps, params, command or outputs; missing outputs on a fresh clone) or when a stage it depends on is
planned. That is what `dvc repro --dry` prints too, except on a fresh clone, where the dry run stops at the first
stage whose inputs do not exist yet.
"""

from __future__ import annotations

import sys
from pathlib import Path


def plan(root: Path = Path(".")) -> list[str]:
    from dvc.repo import Repo
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    with Repo(str(root)) as repo, repo.lock:  # as `dvc status` does: stage checks read under the repo's lock
        graph = get_active_graph(repo.index.graph)
        order = plan_repro(graph, collect_stages(repo, ["dvc.yaml"]))  # dvc repro's own order
        planned: set = set()
        for stage in order:  # each stage after those it depends on (its successors in DVC's graph)
            if any(up in planned for up in graph.successors(stage)) or stage.changed():
                planned.add(stage)
        return [stage.addressing for stage in order if stage in planned]


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m stages.plan PATH")
    out = Path(sys.argv[1])
    stages = plan()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{s}\n" for s in stages))
    print(f"make study: {len(stages)} stage{'' if len(stages) == 1 else 's'} to run")


if __name__ == "__main__":
    main()
