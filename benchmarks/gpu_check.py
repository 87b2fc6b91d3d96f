"""`make gpu-check`: prove the CUDA path on a machine with an NVIDIA GPU, in one run of a few minutes.

In a temporary copy of the study on the tiny profile (`stages.smoke.shrink`, `device: cuda`, `--tracking none`: no
DVC or MLflow needed) it runs, each as a real `python -m stages ...` process:
1. prepare, the evaluator, then the training and the evaluation of one model a family (stacked, dcgan, ddpm);
2. the optimizer steps of dcgan, progan, stylegan and ddpm through the study's own loop (`benchmarks.steps.one_run`):
   images/s and their share of the GPU's FP32 and TF32 peaks (a large matrix multiply with TF32 off, then on);
3. a `torchrun` launch of dcgan's training with nccl, one rank a GPU.
It writes one JSON file (`--out`, default benchmarks/gpu_check.json): the GPU's name, torch, CUDA and driver
versions, and each check with its status, seconds and numbers; written whole or not at all. Without CUDA it says so
in one line and exits 3. A benchmark, not a test: the GPU machines are offline and bring their own PyTorch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAMILY_MODELS = {"autoencoders": "stacked", "gans": "dcgan", "diffusion": "ddpm"}
TRAIN = {"autoencoders": "train-ae", "gans": "train-gan", "diffusion": "train-diffusion"}
BENCH_MODELS = ("dcgan", "progan", "stylegan", "ddpm")
NO_CUDA = 3
SCHEMA = ("gpu", "torch", "cuda", "driver", "gpus", "peaks", "checks", "bench")  # the results file's keys


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "gpu_check.json", help="results file (.json)")
    ap.add_argument("--steps", type=int, default=100, help="optimizer steps of each benchmarked model")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error(f"--steps must be at least 1 (got {args.steps})")
    if args.out.suffix != ".json":
        ap.error(f"--out must name a .json file (got {args.out})")
    if not args.out.resolve().parent.is_dir():
        ap.error(f"--out: folder {args.out.resolve().parent} does not exist")
    return args


def no_cuda_message() -> str | None:
    """One line where this machine cannot run the check, else None."""
    import torch

    if torch.cuda.is_available():
        return None
    return (f"make gpu-check: no CUDA device here (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda or 'none'}): run it on a machine with an NVIDIA GPU")


def driver_version() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
        return out[0] if out else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def peak_gflops(tf32: bool, n: int = 8192, repeats: int = 20) -> float:
    """GFLOP/s of an n x n FP32 matrix multiply on the GPU, TF32 off or on."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = tf32
    a, b = torch.randn(n, n, device="cuda"), torch.randn(n, n, device="cuda")
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    torch.backends.cuda.matmul.allow_tf32 = False
    return round(2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9, 1)


def study_copy(where: Path) -> Path:
    """The tiny profile in a copy: one model a family (and the benchmarked ones), on CUDA, nothing tracked."""
    import yaml

    from stages.smoke import copy_study, shrink

    repo = copy_study(where / "study")
    raw = shrink(yaml.safe_load((ROOT / "params.yaml").read_text()))
    keep = set(FAMILY_MODELS.values()) | set(BENCH_MODELS)
    for block in FAMILY_MODELS:
        raw[block] = {n: v for n, v in raw[block].items() if n in keep}
    raw["device"] = "cuda"
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return repo


def stage(repo: Path, *argv: str, launcher: tuple[str, ...] = ()) -> dict:
    """One stage command as its own process: its status, seconds and last line of output."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    env.pop("STUDY_WARM_SOCKET", None)
    t0 = time.perf_counter()
    cmd = [sys.executable, *launcher, "-m", "stages", *argv, "--tracking", "none"]
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return {"command": " ".join(["python", *launcher, "-m", "stages", *argv]), "ok": done.returncode == 0,
            "seconds": round(time.perf_counter() - t0, 2), "last_line": lines[-1] if lines else ""}


def bench(repo: Path, steps: int, peaks: dict[str, float], tmp: Path) -> list[dict]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from steps import one_run

    rows = []
    for name in BENCH_MODELS:
        out = Path(tempfile.mkdtemp(dir=tmp))
        t = one_run(name, steps, repo / "data" / "prepared", repo / "params.yaml", out)
        gflops = t["flops_per_image"] * t["images_per_second"] / 1e9
        rows.append({"model": name, "steps": t["steps"], "images_per_second": t["images_per_second"],
                     "gflops": round(gflops, 1), "fp32_peak_share": round(gflops / peaks["fp32"], 4),
                     "tf32_peak_share": round(gflops / peaks["tf32"], 4)})
    return rows


def write_results(path: Path, results: dict) -> None:
    """The results file, whole or not at all (a temporary name, then a rename)."""
    missing = [k for k in SCHEMA if k not in results]
    if missing:
        raise ValueError(f"results lack {missing}")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({k: results[k] for k in SCHEMA}, indent=2) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    why = no_cuda_message()
    if why:
        print(why, file=sys.stderr)
        return NO_CUDA
    import torch

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        repo = study_copy(Path(tmp))
        checks = [stage(repo, "prepare"), stage(repo, "evaluator")]
        for block, name in FAMILY_MODELS.items():
            checks += [stage(repo, TRAIN[block], name), stage(repo, "evaluate", name)]
        peaks = {"fp32": peak_gflops(tf32=False), "tf32": peak_gflops(tf32=True)}
        rows = bench(repo, args.steps, peaks, Path(tmp))
        gpus = torch.cuda.device_count()
        checks.append(stage(repo, "train-gan", "dcgan", launcher=("-m", "torch.distributed.run", "--standalone",
                                                                  f"--nproc-per-node={gpus}")))
        results = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
                   "driver": driver_version(), "gpus": gpus, "peaks": peaks, "checks": checks, "bench": rows}
    write_results(args.out, results)
    for c in checks:
        print(f"{'ok ' if c['ok'] else 'FAILED'} {c['seconds']:7.1f} s  {c['command']}")
    for r in rows:
        print(f"{r['model']:10s} {r['images_per_second']:9.1f} img/s  {r['gflops']:8.1f} GFLOP/s  "
              f"{r['fp32_peak_share']:.1%} of FP32, {r['tf32_peak_share']:.1%} of TF32")
    print(f"make gpu-check: {args.out}")
    return 0 if all(c["ok"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
