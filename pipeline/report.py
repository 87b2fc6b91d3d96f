"""reports/README.md from the metrics files, training histories and grids (never from MLflow).

Same inputs, same bytes: no timestamps, fixed ordering, PNGs written without metadata.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pipeline import StudyError  # noqa: E402
from pipeline.config import StudyConfig  # noqa: E402
from pipeline.io import atomic_dir, read_json  # noqa: E402
from pipeline.models import MODELS  # noqa: E402

Fmt = Callable[[Any], str]


def _num(digits: int) -> Fmt:
    return lambda v: "–" if v is None else f"{v:.{digits}f}"


def _int(v: Any) -> str:
    return "–" if v is None else f"{int(v):,}"


def table(columns: list[tuple[str, str, Fmt]], rows: list[dict]) -> str:
    """A markdown table; columns are (header, key, formatter)."""
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(f(row.get(k)) for _, k, f in columns) + " |")
    return "\n".join(lines)


def _load(path: Path, what: str) -> Any:
    if not path.is_file():
        raise StudyError(f"{path}: missing ({what}); is the model in the foreach lists of dvc.yaml and was it run?")
    return read_json(path)


def _curves(histories: dict[str, list[dict]], panels: list[tuple[str, str, str]], path: Path, log: bool) -> None:
    """One figure, one panel per (key, dashed_key, title): each model's per-epoch curve."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, (key, dashed, title) in zip(axes[0], panels):
        for i, (name, history) in enumerate(histories.items()):
            epochs = [r["epoch"] for r in history]
            color = f"C{i}"
            if key in history[0] and len(history) == 1:  # fitted in one shot (PCA): a level, not a curve
                ax.axhline(history[0][key], color=color, linestyle=":", label=name)
            elif key in history[0]:
                ax.plot(epochs, [r[key] for r in history], color=color, label=name)
            if dashed and dashed in history[0] and len(history) > 1:
                ax.plot(epochs, [r[dashed] for r in history], color=color, linestyle="--", linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def write_report(cfg: StudyConfig, metrics_dir: Path, runs_dir: Path, out_dir: Path,
                 manifest_path: Path = Path("data/prepared/manifest.json")) -> Path:
    manifest = _load(manifest_path, "the prepare stage's manifest")
    evaluator = _load(metrics_dir / "evaluator.json", "the evaluator stage's metrics")
    names = list(cfg.models())
    metrics = {n: _load(metrics_dir / f"{n}.json", f"evaluate@{n}'s metrics") for n in names}
    histories = {n: _load(runs_dir / n / "train" / "history.json", f"train stage of {n}") for n in names}
    timing = {n: _load(runs_dir / n / "train" / "timing.json", f"train stage of {n}") for n in names}
    for n in names:
        metrics[n].update(timing[n], epochs=len(histories[n]))
    aes = [n for n in names if MODELS[n].family == "autoencoder"]
    gans = [n for n in names if MODELS[n].family == "gan"]
    generative = [n for n in names if "fid" in metrics[n]]

    with atomic_dir(out_dir) as tmp:
        figures = tmp / "figures"
        figures.mkdir()
        for n in names:
            for grid in sorted((runs_dir / n / "eval").glob("*.png")):
                shutil.copyfile(grid, figures / f"{n}_{grid.name}")
        if aes:
            _curves({n: histories[n] for n in aes}, [("test_mse", "train_mse", "reconstruction MSE (test solid, train dashed)")],
                    figures / "curves_autoencoders.png", log=True)
        if gans:
            _curves({n: histories[n] for n in gans},
                    [("train_d_loss", "", "discriminator loss"), ("train_g_loss", "", "generator loss"),
                     ("train_d_real", "train_d_fake", "D(real) solid, D(fake) dashed")],
                    figures / "curves_gans.png", log=False)
        text = _markdown(cfg, manifest, evaluator, metrics, aes, generative, gans)
        (tmp / "README.md").write_text(text)
    return out_dir / "README.md"


def _markdown(cfg, manifest, evaluator, metrics, aes, generative, gans) -> str:
    s = manifest["splits"]
    shape = "×".join(str(v) for v in manifest["shape"])
    floor = {"model": "real: test split vs train split (floor)", **evaluator["real_vs_real"]}
    out = [
        "# Results of the study",
        "",
        "_Written by `python -m stages report` (the `report` stage) from `metrics/*.json` and "
        "`runs/*/train/*.json` only; rerun `dvc repro` to refresh it. Do not edit by hand._",
        "",
        f"Dataset **{manifest['dataset']}**: {s['train']['images']:,} train and {s['test']['images']:,} test images "
        f"({shape}, {len(manifest['classes'])} classes, stratified split, seed {manifest['seed']}). "
        f"Evaluator CNN (trained on the train split only): test accuracy **{evaluator['test_accuracy']:.4f}** "
        f"on {evaluator['n_test']:,} test images.",
        "",
    ]
    if aes:
        rows = [{"model": n, **metrics[n]} for n in aes]
        out += [
            "## Autoencoders",
            "",
            table([("model", "model", str), ("parameters", "parameters", _int), ("code size", "code_size", _int),
                   ("test MSE", "test_mse", _num(5)), ("PCA test MSE (same code size)", "pca_test_mse", _num(5)),
                   ("ratio to PCA", "mse_ratio_to_pca", _num(3)), ("linear-probe accuracy", "probe_accuracy", _num(3)),
                   ("epochs", "epochs", _int), ("train time (s)", "train_seconds", _num(1)),
                   ("images/s", "images_per_second", _int)], rows),
            "",
            f"MSE: mean squared error per pixel, pixels in [0, 1], reconstructions clipped to [0, 1], on the "
            f"{s['test']['images']:,} test images (lower is better). PCA: scikit-learn PCA fitted on the train split "
            "with the model's code size. Linear probe: logistic regression on standardised codings (the VAE's mean "
            f"coding), fitted on the {s['train']['images']:,} train codings, accuracy on the test codings. "
            "Train time counts optimizer steps only (not the per-epoch evaluation); images/s = training images "
            "processed per second of it.",
            "",
            "Test images (odd rows) over their reconstructions (even rows):",
            "",
            " ".join(f"![{n}](figures/{n}_reconstructions.png)" for n in aes),
            "",
            " · ".join(f"`{n}`" for n in aes) + " (left to right)",
            "",
        ]
    if generative:
        rows = [floor] + [{"model": n, **metrics[n]} for n in generative]
        out += [
            "## Generative quality",
            "",
            table([("model", "model", str), ("FID ↓", "fid", _num(2)), ("KID ↓", "kid_mean", _num(2)),
                   ("KID std", "kid_std", _num(2)), ("precision ↑", "precision", _num(3)),
                   ("recall ↑", "recall", _num(3)), ("classes covered (of 10)", "classes_covered", _int),
                   ("class KL ↓", "class_kl", _num(3)), ("real images", "n_real", _int),
                   ("generated images", "n_generated", _int), ("train time (s)", "train_seconds", _num(1)),
                   ("images/s", "images_per_second", _int)], rows),
            "",
            "All measured in the evaluator CNN's "
            f"{cfg.evaluator.feature_dim}-dimensional penultimate feature space (not Inception's: the numbers compare "
            "models within this study, not with published FIDs). FID and KID (torchmetrics; KID mean and std over "
            f"{cfg.evaluate.kid_subsets} subsets of {cfg.evaluate.kid_subset_size}) compare the generated images with "
            "the train split. Precision and recall: k-nearest-neighbour manifolds (Kynkäänniemi et al. 2019, "
            f"k = {cfg.evaluate.knn_k}). A class is covered when the evaluator assigns it at least "
            f"{cfg.evaluate.coverage_min_share:g} × 1/10 of the samples; class KL is the KL divergence of the predicted-"
            "class histogram from uniform (0: balanced; ln 10 ≈ 2.303: a single class). The first row is the floor: "
            "the same code comparing the real test split with the train split.",
            "",
            "Samples (the first 64 of the generated images):",
            "",
            " ".join(f"![{n}](figures/{n}_samples.png)" for n in generative),
            "",
            " · ".join(f"`{n}`" for n in generative) + " (left to right)",
            "",
        ]
    out += ["## Training curves", ""]
    if aes:
        out += ["![autoencoder curves](figures/curves_autoencoders.png)", ""]
    if gans:
        out += ["![GAN curves](figures/curves_gans.png)", ""]
    return "\n".join(out)
