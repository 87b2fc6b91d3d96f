"""`make bench-steps`: a model's optimizer steps against the machine, and against the code of another revision.

For each model named, one run trains it through the study's own code (`train_model`, tracking off, no curve
points) for `--steps` optimizer steps: the budget is cut to that many steps, so a growing model (ProGAN) runs
every phase of its schedule in the same proportions as in the study. It prints images/s of the steps, the FLOPs
per training image (counted by the loop on one step of each phase), the steps' GFLOP/s, the FP32 peak this process
reaches (a large matrix multiply at the same thread count) and the steps' share of it.

`--against REV` also runs the same steps with the code of git revision REV (a worktree under the temporary
folder; the child process imports that revision's `pipeline`), alternating the two `--repeats` times, and prints
each repeat's ratio and the median ratio: a speed-up measured as paired runs on one machine, not two numbers from
two days. Each run is its own process (`--threads` threads). A benchmark, not a test: say which machine beside its
numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(name: str, steps: int, data_dir: Path, params: Path, out: Path) -> dict:
    """Train `name` for `steps` optimizer steps with whatever `pipeline` this process imports; its timing.json."""
    import yaml

    from pipeline.config import parse_config
    from pipeline.data import load
    from pipeline.train.run import train_model
    from pipeline.train.session import TrainPaths

    raw = yaml.safe_load(params.read_text())
    raw["tracking"]["log_model"] = "none"
    cfg = parse_config(raw)
    batch = cfg.model(name).batch_size
    budget = cfg.budget.model_copy(update={"images": steps * batch})
    cfg = cfg.model_copy(update={"budget": budget}).with_seed(None)
    if hasattr(cfg.model(name), "epochs"):  # an autoencoder with epochs: as many as `steps` needs
        data = load(data_dir)
        per_epoch = len(data.x_train) // batch
        entry = cfg.model(name).model_copy(update={"epochs": max(1, -(-steps // per_epoch))})
        block = next(b for b in ("autoencoders", "gans", "diffusion") if name in getattr(cfg, b).entries())
        cfg = cfg.model_copy(update={block: getattr(cfg, block).model_copy(update={name: entry})})
    paths = TrainPaths.for_model(name, out)
    train_model(name, cfg, load(data_dir), paths)
    return json.loads((paths.run_dir / "timing.json").read_text())


def child(tree: Path, args: argparse.Namespace, name: str, data_dir: Path, tmp: Path) -> dict:
    """One run in its own process, importing the `pipeline` of `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(args.threads)}
    env.pop("DVC_ROOT", None)
    out = Path(tempfile.mkdtemp(dir=tmp))
    code = ("import json, sys, torch; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
            f"torch.set_num_threads({args.threads}); from steps import one_run; "
            "print(json.dumps(one_run(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]), "
            "Path(sys.argv[6]))))")
    result = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), name, str(args.steps),
                             str(data_dir), str(tree / "params.yaml"), str(out)],
                            env=env, cwd=out, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{name} ({tree}): the run failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def peak(threads: int) -> float:
    import torch

    from pipeline.train.flops import matmul_peak

    torch.set_num_threads(threads)
    return matmul_peak()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps a run (the budget cut to them)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each model (of each revision)")
    parser.add_argument("--threads", type=int, default=2, help="threads of each run (the study's stages: 2)")
    parser.add_argument("--against", help="a git revision whose code runs the same steps, alternated")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "prepared")
    args = parser.parse_args(argv)
    if not (args.data / "manifest.json").is_file():
        sys.exit(f"{args.data}: no prepared data (dvc repro prepare)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        trees = {"this": ROOT}
        if args.against:
            base = tmp / "against"
            subprocess.run(["git", "worktree", "add", "--detach", str(base), args.against], cwd=ROOT, check=True,
                           capture_output=True)
            trees[args.against] = base
        try:
            print(f"{'model':20s} {'code':>10s} {'images/s':>9s} {'MFLOP/img':>10s} {'GFLOP/s':>8s} {'peak':>7s} "
                  f"{'share':>6s}", flush=True)
            for name in args.models:
                rates: dict[str, list[float]] = {k: [] for k in trees}
                flops = 0.0
                for _ in range(args.repeats):
                    for label, tree in trees.items():  # alternated: a slow spell of the machine hits both
                        t = child(tree, args, name, args.data, tmp)
                        rates[label].append(t["images_per_second"])
                        flops = t.get("flops_per_image") or flops  # older code does not count them
                        p = t.get("peak_gflops") or peak(args.threads)
                        gflops = flops * t["images_per_second"] / 1e9
                        print(f"{name:20s} {label:>10s} {t['images_per_second']:9.1f} {flops / 1e6:10.1f} "
                              f"{gflops:8.1f} {p:7.1f} {gflops / p:6.1%}", flush=True)
                if args.against:
                    ratios = [a / b for a, b in zip(rates["this"], rates[args.against])]
                    print(f"{name:20s} this / {args.against}: median {statistics.median(ratios):.3f} "
                          f"(repeats: {', '.join(f'{r:.3f}' for r in ratios)})", flush=True)
        finally:
            if args.against:
                subprocess.run(["git", "worktree", "remove", "--force", str(trees[args.against])], cwd=ROOT,
                               capture_output=True)


if __name__ == "__main__":
    main()
