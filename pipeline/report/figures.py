"""The report's figures (matplotlib, Agg), each from files the pipeline wrote. PNGs carry no metadata."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path.name


def _panels(n: int, width: float = 3.6, height: float = 2.8, cols: int = 4):
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def curves_per_model(histories: dict[str, list[dict]], solid: str, dashed: str, title: str, path: Path,
                     log: bool = True) -> str:
    """One panel per model: `solid` and `dashed` keys per epoch (a level line for one-shot models)."""
    fig, axes = _panels(len(histories))
    for ax, (name, history) in zip(axes, histories.items()):
        epochs = [r["epoch"] for r in history]
        if len(history) == 1:
            ax.axhline(history[0][solid], color="C0", label=solid)
            ax.axhline(history[0][dashed], color="C1", linestyle="--", label=dashed)
        else:
            ax.plot(epochs, [r[solid] for r in history], color="C0", label=solid)
            ax.plot(epochs, [r[dashed] for r in history], color="C1", linestyle="--", label=dashed)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def curves_together(histories: dict[str, list[dict]], panels: list[tuple[str, str, str]], path: Path,
                    log: bool = False) -> str:
    """One panel per (key, dashed key, title), one line per model."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, (key, dashed, title) in zip(axes[0], panels):
        for i, (name, history) in enumerate(histories.items()):
            epochs = [r["epoch"] for r in history]
            if key in history[0]:
                ax.plot(epochs, [r[key] for r in history], color=f"C{i}", label=name)
            if dashed and dashed in history[0]:
                ax.plot(epochs, [r[dashed] for r in history], color=f"C{i}", linestyle="--", linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def principal_angles(angles: dict[str, list[float]], path: Path) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, (name, values) in enumerate(angles.items()):
        ax.bar(np.arange(1, len(values) + 1) + 0.8 * i / len(angles), values, width=0.8 / len(angles), label=name)
    ax.set_xlabel("principal angle (smallest first)")
    ax.set_ylabel("degrees")
    ax.set_title("decoder column space vs PCA's top components")
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    return _save(fig, path)


def activation_histograms(per_unit: dict[str, list[float]], targets: dict[str, float], path: Path) -> str:
    fig, axes = _panels(len(per_unit), width=4.5, cols=3)
    for ax, (name, values) in zip(axes, per_unit.items()):
        ax.hist(values, bins=np.linspace(0, max(0.3, max(values)), 40), color="C0")
        ax.axvline(targets[name], color="C3", linestyle="--", label=f"target {targets[name]:g}")
        ax.axvline(float(np.mean(values)), color="k", label=f"mean {np.mean(values):.3f}")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("a unit's mean activation over the test images")
        ax.set_ylabel("units")
        ax.legend(fontsize=7)
    return _save(fig, path)


def sparsity_penalties(target: float, path: Path) -> str:
    """The three penalties as functions of a unit's mean activation, for a fixed target (as in the book)."""
    q = np.linspace(0.001, 0.999, 500)
    kl = target * np.log(target / q) + (1 - target) * np.log((1 - target) / (1 - q))
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(q, kl, label="KL divergence")
    ax.plot(q, np.abs(q - target), label="L1 (mean absolute error)")
    ax.plot(q, (q - target) ** 2, label="L2 (mean squared error)")
    ax.axvline(target, color="k", linestyle=":", linewidth=1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean activation of a coding unit")
    ax.set_ylabel("penalty")
    ax.set_title(f"sparsity penalties for target {target:g}")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def codings_map(arrays: dict[str, list], name: str, path: Path) -> str:
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    x, y, labels = np.array(arrays["tsne_x"]), np.array(arrays["tsne_y"]), np.array(arrays["tsne_label"])
    for k in sorted(set(labels.tolist())):
        sel = labels == k
        ax.scatter(x[sel], y[sel], s=6, color=plt.cm.tab10(k % 10), label=str(k))
        ax.annotate(str(k), (float(np.median(x[sel])), float(np.median(y[sel]))), fontsize=14, weight="bold")
    ax.set_title(f"t-SNE of {name}'s test codings, coloured by class")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=3, fontsize=7, ncols=2)
    return _save(fig, path)


def few_labels(results: dict[str, dict[str, list[float | None]]], counts: list[int], modes: list[str],
               path: Path) -> str:
    """Test accuracy against the number of labels: one panel per mode, one line per model."""
    fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 4), squeeze=False, sharey=True)
    for ax, mode in zip(axes[0], modes):
        for i, (name, by_mode) in enumerate(results.items()):
            pairs = [(c, a) for c, a in zip(counts, by_mode[mode]) if a is not None]
            if pairs:
                ax.plot(*zip(*pairs), marker="o", markersize=3, color=plt.cm.tab20(i % 20), label=name)
        ax.set_xscale("log")
        ax.set_title(mode)
        ax.set_xlabel("labelled training images")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def budget_curves(curves: dict[str, list[dict]], path: Path) -> str:
    """The central comparison: FID against images seen and against training seconds, recall and classes covered
    against images seen; one line per generative model, the same colour in every panel."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    panels = [(axes[0, 0], "images", "fid", "FID ↓ (log scale)"), (axes[0, 1], "seconds", "fid", "FID ↓ (log scale)"),
              (axes[1, 0], "images", "recall", "recall ↑"), (axes[1, 1], "images", "classes_covered", "classes covered")]
    for i, (name, curve) in enumerate(curves.items()):
        style = {"color": plt.cm.tab10(i % 10), "marker": "o", "markersize": 3, "label": name}
        for ax, x, y, _ in panels:
            points = [p for p in curve if p.get(y) is not None]
            ax.plot([p[x] for p in points], [p[y] for p in points], **style)
    for ax, x, y, label in panels:
        ax.set_xlabel({"images": "training images seen", "seconds": "training seconds (optimizer steps, this machine)"}[x])
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if y == "fid":
            ax.set_yscale("log")
        if y == "seconds" or x == "seconds":
            ax.set_xscale("log")
    axes[0, 0].legend(fontsize=8)
    return _save(fig, path)


def losses_by_objective(histories: dict[str, list[dict]], objectives: dict[str, str], path: Path) -> str:
    """GAN losses per epoch, one row of panels per objective: a BCE loss and a Wasserstein critic's score live on
    different scales and never share an axis."""
    groups: dict[str, list[str]] = {}
    for name, objective in objectives.items():
        groups.setdefault(objective, []).append(name)
    panels = [("train_d_loss", "", "discriminator loss"), ("train_g_loss", "", "generator loss"),
              ("train_d_real", "train_d_fake", "D(real) solid, D(fake) dashed")]
    fig, axes = plt.subplots(len(groups), len(panels), figsize=(5.5 * len(panels), 3.6 * len(groups)), squeeze=False)
    for row, (objective, names) in zip(axes, groups.items()):
        for ax, (key, dashed, title) in zip(row, panels):
            for i, name in enumerate(names):
                history = histories[name]
                epochs = [r["epoch"] for r in history]
                if key in history[0]:
                    ax.plot(epochs, [r[key] for r in history], color=f"C{i}", label=name)
                if dashed and dashed in history[0]:
                    ax.plot(epochs, [r[dashed] for r in history], color=f"C{i}", linestyle="--", linewidth=1)
            ax.set_title(f"{objective}: {title}", fontsize=10)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    return _save(fig, path)


def growth_schedule(arrays: dict[str, list], name: str, path: Path) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    epoch = arrays["schedule_share"]
    ax.plot(epoch, arrays["schedule_alpha"], color="C0", label="fade-in alpha")
    ax.set_ylabel("alpha")
    ax.set_xlabel("share of the training budget")
    ax2 = ax.twinx()
    ax2.step(epoch, arrays["schedule_resolution"], where="post", color="C1", label="resolution")
    ax2.set_ylabel("resolution (pixels)", color="C1")
    ax.set_title(f"{name}: growth schedule")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def noise_schedules(arrays: dict[str, list], path: Path) -> str:
    """abar_t against t for the linear and the cosine schedule (the signal a noised image keeps)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for i, kind in enumerate(("linear", "cosine")):
        ax.plot(arrays["schedule_t"], arrays[f"abar_{kind}"], color=f"C{i}", label=kind)
    ax.set_xlabel("step t")
    ax.set_ylabel("ᾱ_t (signal variance kept)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Noise schedules")
    return _save(fig, path)


def steps_sweep(arrays: dict[str, list], path: Path) -> str:
    """FID and seconds per 1,000 samples against the number of sampling steps (log axis): one line per DDIM eta,
    ancestral DDPM as a point of its own."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    rows = list(zip(arrays["sweep_sampler"], arrays["sweep_eta"], arrays["sweep_steps"]))
    for ax, key, label in ((axes[0], "sweep_fid", "FID ↓"), (axes[1], "sweep_seconds_per_1000", "seconds per 1,000 samples")):
        values = arrays[key]
        for i, eta in enumerate(sorted({e for k, e, _ in rows if k == "ddim"})):
            line = [(s, v) for (k, e, s), v in zip(rows, values) if k == "ddim" and e == eta]
            ax.plot([s for s, _ in line], [v for _, v in line], "o-", color=f"C{i}", label=f"DDIM, η = {eta:g}")
        ax.plot([s for k, _, s in rows if k == "ddpm"], [v for (k, _, _), v in zip(rows, values) if k == "ddpm"],
                "s", color="C3", label="DDPM (ancestral)")
        ax.set_xscale("log")
        if key == "sweep_seconds_per_1000":
            ax.set_yscale("log")  # from a few seconds to T passes an image
        ax.set_xlabel("sampling steps (network passes)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)
