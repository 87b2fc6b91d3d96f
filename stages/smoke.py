"""`python -m stages.smoke` (`make smoke`): the whole pipeline on a tiny profile, in a temporary copy of the study.

"Does it work here?" in a few minutes, before committing hours to `make study`: the repository's files (not its
results) are copied to a new folder under the temporary directory, params.yaml is shrunk (400 training and 100
test images, two epochs or 800 images a model, one model of each family), and a real `dvc repro` runs there:
prepare, the evaluator, the three models' training and evaluation, the report, logged to that copy's own
mlflow.db. It ends with the path of the smoke report; the checkout itself is left alone. Not a pipeline stage (and
not imported by one); the end-to-end tests build their study with the same two functions.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from stages.warm import Server

ROOT = Path(__file__).resolve().parents[1]
# what the pipeline writes: left behind, so that a copy starts from the code and params alone
OUTPUTS = ("data/prepared", "models/", "runs/", "metrics/", "plots/", "reports/", "checkpoints/", "dvc.lock", "mlflow.db",
           "mlartifacts/")
SMOKE_MODELS = {"autoencoders": ("stacked",), "gans": ("dcgan",), "diffusion": ("ddpm",)}


def shrink(raw: dict) -> dict:
    """params.yaml made tiny: one training seed (42), 400/100/100 images, one or two epochs (a budget of 800
    images), batch 32 for every model (so the profile's step counts stay put when a tuned batch size moves), small
    sample counts, 50 diffusion steps, no model export."""
    raw = copy.deepcopy(raw)
    raw["seeds"] = [42]  # a tiny profile checks that the pipeline works, not the claims over seeds
    raw["data"].update(train_size=400, val_size=100, test_size=100)
    raw["evaluator"].update(epochs=2, batch_size=32)
    raw["evaluate"].update(n_generated=100, kid_subset_size=50, kid_subsets=5, probe_max_iter=200,
                           few_labels=[20, "all"], few_label_steps=5, sample_sets=2, curve_samples=50,
                           ppl_pairs=100, separability_samples=200)
    raw["budget"].update(images=800, curve_points=2)  # 2 epochs of 400 images
    raw["train"].update(checkpoint_every=5, grid_size=16)
    for block in ("autoencoders", "gans", "diffusion"):
        for entry in raw[block].values():
            if "epochs" in entry:
                entry["epochs"] = 2
            if "growth_share" in entry:  # grow over the whole (tiny) budget: every phase gets a few steps
                entry["growth_share"] = 1.0
            if "pretrain_epochs" in entry:  # one epoch per layer, then one of fine-tuning
                entry["pretrain_epochs"] = 1
                entry["epochs"] = len(entry.get("hidden", [])) + 2
            if "timesteps" in entry:  # a short noising process: sampling costs T passes
                entry.update(timesteps=50, sample_steps=5, steps_sweep=[2, 5], sweep_samples=20)
            if "batch_size" in entry:
                entry["batch_size"] = 32
    raw["tracking"]["log_model"] = "none"
    return raw


def copy_study(dst: Path, src: Path = ROOT) -> Path:
    """The repository's tracked and untracked-but-not-ignored files, without the pipeline's outputs, into `dst`
    (links, such as pipeline/models/deps/, stay links)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=src,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        path = src / name
        if (path.is_file() or path.is_symlink()) and not name.startswith(OUTPUTS):
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dst / name, follow_symlinks=False)
    own_evaluator(dst)
    return dst


def own_evaluator(dst: Path) -> None:
    """Unfreeze the evaluator stage in a copy: the tiny profile's data is its own, so it trains its own ruler (the
    study's is frozen in dvc.yaml and committed, `models/evaluator.pt`; a copy leaves the results behind)."""
    dvc_yaml = dst / "dvc.yaml"
    text = dvc_yaml.read_text()
    head, sep, rest = text.partition("\n  evaluator:\n    frozen: true\n")
    if sep:
        dvc_yaml.write_text(head + "\n  evaluator:\n" + rest)


def main() -> None:
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="ae-gan-smoke-")) / "study"
    copy_study(work)
    raw = shrink(yaml.safe_load((ROOT / "params.yaml").read_text()))
    for block, names in SMOKE_MODELS.items():
        raw[block] = {n: v for n, v in raw[block].items() if n in names}
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k not in ("DVC_ROOT", "MLFLOW_TRACKING_URI", "DVC_STAGE",
                                                           "STUDY_PLAN")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(work))
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"],
                ["git", "-c", "user.name=smoke", "-c", "user.email=smoke@localhost", "commit", "-qm", "smoke"]):
        subprocess.run(cmd, cwd=work, env=env, check=True)
    print(f"make smoke: a tiny study in {work} ({', '.join(n for ns in SMOKE_MODELS.values() for n in ns)})",
          flush=True)
    with Server(env) as warm:  # the stages start warm, as in `make study` (stages/warm.py)
        done = subprocess.run(["dvc", "repro"], cwd=work, env=warm)
    if done.returncode:
        sys.exit(f"make smoke: dvc repro failed in {work} (exit {done.returncode})")
    print(f"make smoke: done in {time.perf_counter() - t0:.0f} s; the smoke report: {work / 'reports' / 'README.md'}")


if __name__ == "__main__":
    main()
