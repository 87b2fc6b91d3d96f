"""The report's sections, in order. Each takes the loaded study and returns markdown, or None when no model
has what the section shows."""

from __future__ import annotations

import re
import shutil
from typing import Any, Callable

import numpy as np
import pandas as pd

from pipeline.evaluate.pretraining import MODES
from pipeline.models import MODELS
from pipeline.report import Study
from pipeline.report import figures as fig
from pipeline.report.claims import FEW_LABELS, mixed_counts, verdicts
from pipeline.report.stats import family
from pipeline.rules import ALPHA, BLOW_UP, COLLAPSE, MIN_SEEDS, most_collapsed
from pipeline.rules import collapsed as is_collapsed
from pipeline.tuning import LR_KEYS

Fmt = Callable[[Any], str]


def _num(digits: int) -> Fmt:
    return lambda v: "–" if v is None else f"{v:.{digits}f}"


def _sig(v: Any) -> str:
    """Three significant digits: times from milliseconds to minutes."""
    return "–" if v is None else f"{v:.3g}"


def _int(v: Any) -> str:
    return "–" if v is None else f"{int(v):,}"


def _count(v: Any) -> str:
    """A count; a mean of counts over seeds keeps one decimal."""
    if v is None:
        return "–"
    return f"{v:,.1f}" if isinstance(v, float) and not v.is_integer() else f"{int(v):,}"


def table(columns: list[tuple[str, str, Any]], rows: list[dict]) -> str:
    """A markdown table (pandas' `to_markdown`): columns are (header, key, formatter); each cell is the text its
    formatter makes of the row's value at the key (a `_pm` one reads the whole row). Columns of numbers align right."""
    cells = [[f(row, k) if getattr(f, "row_wise", False) else f(row.get(k)) for _, k, f in columns] for row in rows]
    align = ["left"] + ["right" if all(re.match(r"[-+–]?\d|–$", c[i]) for c in cells) else "left"
                        for i in range(1, len(columns))]
    text = pd.DataFrame(cells, columns=[h for h, _, _ in columns]).to_markdown(
        index=False, disable_numparse=True, colalign=align)
    return "\n".join(_unpadded(line) for line in text.splitlines())


def _unpadded(line: str) -> str:
    """A table line without tabulate's padding ('| a   |' -> '| a |', '|:-----|' -> '|:---|'): the same table
    rendered, a file a third smaller and rows that read the same whatever the column widths."""
    cells = [c.strip() for c in line.strip()[1:-1].split("|")]
    if all(re.fullmatch(r":?-+:?", c) for c in cells):
        cells = [(":" if c.startswith(":") else "") + "---" + (":" if c.endswith(":") else "") for c in cells]
        return "|" + "|".join(cells) + "|"
    return "| " + " | ".join(cells) + " |"


def images(study: Study, names: list[str], key: str) -> str:
    shown = [n for n in names if (study.figures / f"{n}_{key}.png").is_file()]
    return " ".join(f"![{n}](figures/{n}_{key}.png)" for n in shown) + "\n\n" + " · ".join(f"`{n}`" for n in shown) \
        + " (left to right)"


def _names(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names) if names else "none"


def _overcomplete(study: Study, name: str) -> bool:
    """A coding wider than some hidden layer (read from the model's config, whatever the model)."""
    cfg = study.cfg.model(name)
    hidden = getattr(cfg, "hidden", None)
    widths = hidden if isinstance(hidden, list) else [hidden] if isinstance(hidden, int) else []
    return any(cfg.code_size > w for w in widths)


def header(study: Study) -> str:
    s, m = study.manifest["splits"], study.manifest
    shape = "×".join(str(v) for v in m["shape"])
    return "\n".join([
        "# Results of the study",
        "",
        "_Written by `python -m stages report` (the `report` stage) from `metrics/*.json`, `runs/*/train/*.json`, "
        "`runs/*/eval/*.json` and the first seed's `runs/*/grids` and `runs/*/figures` only; rerun `dvc repro` to "
        "refresh it. Do not edit by hand._",
        "",
        f"Dataset **{m['dataset']}**: {s['train']['images']:,} train, {s.get('val', {}).get('images', 0):,} "
        f"validation and {s['test']['images']:,} test images ({shape}, {len(m['classes'])} classes, disjoint "
        f"stratified splits, seed {m['seed']}). Models learn from the train split; every choice made by looking at a "
        "number (training curves, the learning-rate grid, the sampler's screen) reads the validation split; the "
        "numbers reported here are measured on the test split, which nothing was chosen on. Evaluator CNN (trained on "
        f"the train split only): test accuracy **{study.evaluator['test_accuracy']:.4f}** on "
        f"{study.evaluator['n_test']:,} test images."
        + (f" Its weights, `models/evaluator.pt` (sha256 `{study.evaluator['weights_sha256']}`), are frozen in "
           "`dvc.yaml`: every FID, KID and precision/recall here and in the tuning grid is measured with this one "
           "network." if "weights_sha256" in study.evaluator else ""),
        "",
    ])


def lecture(study: Study) -> str | None:
    """The lecture's claims, each with the study's experiment, its evidence and a computed verdict."""
    rows = verdicts(study)
    tested = sum(bool(r.get("family")) for r in rows)
    return "\n".join([
        "## What the lecture claims",
        "",
        table([("the lecture says", "said", str), ("the study's experiment", "experiment", str),
               ("evidence (per seed)", "evidence", str), ("verdict", "verdict", str)], rows),
        "",
        f"A claim about a difference gets a verdict from a two-sided Welch t-test over the per-seed values "
        f"({len(study.seeds)} training seed{'s' if len(study.seeds) > 1 else ''} here), Holm-corrected over the "
        f"{tested} tested claims together, at "
        f"α = {ALPHA:g}: *holds* (separated, in the claimed direction), *contradicted* (separated, the other way) or "
        f"*not separated at this budget*; with fewer than {MIN_SEEDS} seeds there is no verdict, only the measurement. "
        "The criterion is written in `pipeline/report/claims.py` and does not depend on the numbers. Rows that hold "
        "by construction or that the study only shows say so. Evidence lists one value per seed in seed order "
        f"({', '.join(map(str, study.seeds))}); pretraining uses {FEW_LABELS} labels.",
        "",
    ])


def autoencoders(study: Study) -> str | None:
    aes = study.family("autoencoder")
    if not aes:
        return None
    rows = [{"model": n, **study.metrics[n]} for n in aes]
    few = [(f"{mode} @100", f"few_label_{mode}_100", _num(3)) for mode in MODES if any(f"few_label_{mode}_100" in r for r in rows)]
    networks = [n for n in aes if study.metrics[n]["steps"] > 0]  # gradient-trained: not PCA itself
    under = [n for n in networks if not _overcomplete(study, n)]
    over = [n for n in networks if n not in under]
    better = [n for n in under if study.metrics[n]["mse_ratio_to_pca"] < 1]
    worse = [f"`{n}` ({study.metrics[n]['mse_ratio_to_pca']:.3f})" for n in under if n not in better]
    dead = [f"`{n}` {_count(m['code_size'] - m['active_codes'])} of {_count(m['code_size'])}" for n in aes
            if (m := study.metrics[n])["active_codes"] < m["code_size"]]
    s = study.manifest["splits"]
    return "\n".join([
        "## Autoencoders",
        "",
        table([("model", "model", str), ("parameters", "parameters", _int), ("code size", "code_size", _int),
               ("active codes", "active_codes", _int), ("test MSE", "test_mse", _num(5)),
               ("PCA test MSE (same code size)", "pca_test_mse", _num(5)), ("ratio to PCA", "mse_ratio_to_pca", _num(3)),
               ("linear-probe accuracy", "probe_accuracy", _num(3)), *few, ("epochs", "epochs", _int),
               ("train time (s)", "train_seconds", _num(1)), ("images/s", "images_per_second", _int)], rows),
        "",
        f"MSE: mean squared error per pixel, pixels in [0, 1], reconstructions clipped to [0, 1], on the "
        f"{s['test']['images']:,} clean test images (lower is better). PCA: scikit-learn PCA fitted on the train split "
        "with the model's code size. Active codes: coding units whose value varies over the test images. Linear probe: "
        "logistic regression on standardised codings (the VAE's mean coding), fitted on the train codings. "
        "`@100`: test accuracy of a classifier on the encoder trained with 100 labels (see *Pretraining with few "
        "labels*). Train time counts optimizer steps only (not the per-epoch evaluation); images/s = training images "
        "processed per second of it.",
        "",
        f"Undercomplete networks better than PCA of the same code size on test MSE: {_names(better)}. Not better "
        f"(ratio to PCA): {', '.join(worse) if worse else 'none'}. Overcomplete (coding wider than a hidden layer, "
        f"so PCA with as many components is nearly lossless and no fair bar): {_names(over)}. Coding units that "
        f"never vary over the test images (dead ReLUs): {', '.join(dead) if dead else 'none'}.",
        "",
        "Test images (odd rows) over their reconstructions (even rows):",
        "",
        images(study, aes, "reconstructions"),
        "",
        *_curves(study, networks),
        "",
    ])


def _curves(study: Study, names: list[str]) -> list[str]:
    if not names:
        return []
    path = fig.curves_per_model({n: study.histories[n] for n in names}, "val_mse", "train_mse",
                                "reconstruction MSE per epoch", study.figures / "curves_autoencoders.png")
    splits = study.manifest['splits']
    return ["Reconstruction MSE per epoch, train (dashed) against validation (solid), each on a fixed seeded subset "
            "of the same size: where the two part, the model over-fits its "
            f"{splits['train']['images']:,} training images. Training never sees the test split.", "",
            f"![curves](figures/{path})"]


def linear_vs_pca(study: Study) -> str | None:
    names = study.having("principal_angle_max_deg")
    if not names:
        return None
    rows = []
    for n in names:
        angles = study.arrays[n]["principal_angles_deg"]
        rows.append({"model": n, **study.metrics[n], "under10": f"{sum(a < 10 for a in angles)} of {len(angles)}"})
    path = fig.principal_angles({n: study.arrays[n]["principal_angles_deg"] for n in names}, study.figures / "principal_angles.png")
    return "\n".join([
        "## A linear autoencoder is PCA",
        "",
        table([("model", "model", str), ("code size", "code_size", _int), ("test MSE", "test_mse", _num(5)),
               ("PCA test MSE", "pca_test_mse", _num(5)), ("ratio", "mse_ratio_to_pca", _num(4)),
               ("mean principal angle (°)", "principal_angle_mean_deg", _num(2)),
               ("largest principal angle (°)", "principal_angle_max_deg", _num(1)), ("angles under 10°", "under10", str)], rows),
        "",
        "The principal angles between the decoder's column space and the span of PCA's top components measure "
        "whether both found the same subspace (0° everywhere: identical). The MSE ratio says how much of that "
        "matters for reconstruction: directions whose variances are nearly equal can be swapped at almost no cost, "
        "so a large last angle with a ratio near 1 means the autoencoder has found PCA's subspace up to "
        "near-degenerate directions that gradient descent has not yet separated.",
        "",
        f"![principal angles](figures/{path})",
        "",
    ])


def greedy(study: Study) -> str | None:
    names = [n for n in study.family("autoencoder") if any("phase" in r for r in study.histories[n])]
    if not names:
        return None
    out = ["## Greedy layer-wise training", ""]
    for n in names:
        phases = list(dict.fromkeys(r["phase"] for r in study.histories[n]))
        row = {"model": n, **{p: study.metrics[n].get(f"val_mse_after_{p}") for p in phases}}
        out += [table([("model", "model", str), *[(f"validation MSE after {p}", p, _num(5)) for p in phases]],
                      [row]), ""]
    out += [
        "Each phase trains one shallow autoencoder on the codings of the layers below (held fixed); the last phase "
        "fine-tunes the stacked network end to end. The stack's validation MSE before fine-tuning is the column "
        "before last; after fine-tuning, the last (measured during training, which never sees the test split).",
        "",
    ]
    return "\n".join(out)


def denoising(study: Study) -> str | None:
    names = study.having("noisy_test_mse")
    if not names:
        return None
    rows = []
    for n in names:
        c = study.cfg.model(n)
        rows.append({"model": n, "noise": f"{c.noise} {c.noise_level:g}", **study.metrics[n]})
    return "\n".join([
        "## Denoising",
        "",
        table([("model", "model", str), ("training noise", "noise", str), ("clean test MSE", "test_mse", _num(5)),
               ("PCA, clean", "pca_test_mse", _num(5)), ("noisy test images, denoised", "noisy_test_mse", _num(5)),
               ("noisy test images as they are", "noise_mse", _num(5))], rows),
        "",
        "Noise is applied only while training. The last two columns corrupt the test images with the model's own "
        "noise (seeded): its reconstruction of them against the clean images, next to the noisy images themselves.",
        "",
        "Rows: clean test images, their noisy versions, the model's reconstructions of the noisy ones.",
        "",
        images(study, names, "denoising"),
        "",
    ])


def sparsity(study: Study) -> str | None:
    names = study.having("mean_activation")
    if not names:
        return None
    rows = []
    for n in names:
        c = study.cfg.model(n)
        rows.append({"model": n, "penalty": f"{c.penalty}, weight {c.weight:g}", **study.metrics[n]})
    hist = fig.activation_histograms({n: study.arrays[n]["unit_mean_activation"] for n in names},
                                     {n: study.metrics[n]["target_activation"] for n in names},
                                     study.figures / "sparse_activations.png")
    targets = sorted({study.metrics[n]["target_activation"] for n in names})
    penalties = [fig.sparsity_penalties(t, study.figures / f"sparsity_penalties_{t:g}.png") for t in targets]
    within = [n for n in names if abs(study.metrics[n]["activation_ratio_to_target"] - 1) <= 0.2]
    return "\n".join([
        "## Sparse autoencoders",
        "",
        table([("model", "model", str), ("penalty", "penalty", str), ("target", "target_activation", _num(3)),
               ("mean activation", "mean_activation", _num(4)), ("ratio to target", "activation_ratio_to_target", _num(2)),
               ("activations above 0.5", "units_firing_per_image", _num(4)), ("dead units", "dead_units", _num(2)),
               ("test MSE", "test_mse", _num(5))], rows),
        "",
        "Mean activation: of the sigmoid coding units over the test images. Activations above 0.5: the share of "
        "(unit, image) pairs where a unit is more on than off. Dead units: share of units whose mean activation is "
        f"below 0.001. Within 20 % of the target: {_names(within)}.",
        "",
        f"Mean activation within 20 % of the target: {_names(within)}; not: {_names([n for n in names if n not in within])}. "
        "Dead units per model: " + ", ".join(f"`{n}` {study.metrics[n]['dead_units']:.0%}" for n in names) + ". "
        "The histograms of each unit's mean activation show how: a KL penalty constrains each unit's *mean*, "
        "which the network can meet with every unit weakly on; an L1 penalty pushes activations themselves to zero "
        "and can silence units outright.",
        "",
        f"![unit activations](figures/{hist})",
        "",
        *[f"![penalties](figures/{p})" for p in penalties],
        "",
    ])


def variational(study: Study) -> str | None:
    names = [n for n in study.having("fid", "autoencoder") if "val_kl" in study.histories[n][0]]
    if not names:
        return None
    path = fig.curves_together({n: study.histories[n] for n in names},
                               [("val_reconstruction", "train_reconstruction",
                                 "reconstruction term (validation solid, train dashed)"),
                                ("val_kl", "train_kl", "KL term (validation solid, train dashed)")],
                               study.figures / "elbo_terms.png")
    return "\n".join([
        "## Variational autoencoder",
        "",
        "The two terms of the negative ELBO per epoch, per image: reconstruction (summed squared error) and "
        "KL(q(z|x) || N(0, I)).",
        "",
        f"![ELBO terms](figures/{path})",
        "",
        "Samples from z ~ N(0, I):",
        "",
        images(study, names, "samples"),
        "",
        "Walking along each latent axis from -3 to 3 (one row per axis, the other coordinates at 0):",
        "",
        images(study, names, "latent_axes"),
        "",
        "Interpolating between the mean codings of two test images (the images themselves at both ends):",
        "",
        images(study, names, "interpolation"),
        "",
    ])


def codings_maps(study: Study) -> str | None:
    names = [n for n in study.metrics if "tsne_x" in study.arrays[n]]
    if not names:
        return None
    out = ["## Visualising the codings", ""]
    for n in names:
        path = fig.codings_map(study.arrays[n], n, study.figures / f"{n}_tsne.png")
        out += [f"t-SNE of `{n}`'s {study.metrics[n]['code_size']}-dimensional codings of the test images:", "",
                f"![t-SNE](figures/{path})", ""]
    return "\n".join(out)


def pretraining(study: Study) -> str | None:
    names = [n for n in study.family("autoencoder") if any(k.startswith("few_label_") for k in study.metrics[n])]
    if not names:
        return None
    labels = study.cfg.evaluate.few_labels
    n_train = study.manifest["splits"]["train"]["images"]
    counts = [n_train if n == "all" else min(int(n), n_train) for n in labels]
    acc = {n: {mode: [study.metrics[n].get(f"few_label_{mode}_{k}") for k in labels] for mode in MODES} for n in names}
    path = fig.few_labels(acc, counts, list(MODES), study.figures / "few_labels.png")
    rows = []
    for n in names:
        row = {"model": n}
        for k in labels:
            row[str(k)] = " / ".join("–" if (v := study.metrics[n].get(f"few_label_{m}_{k}")) is None else f"{v:.3f}"
                                     for m in MODES)
        rows.append(row)
    sentences = []
    for k, count in zip(labels, counts):
        pairs = [(study.metrics[n].get(f"few_label_finetuned_{k}"), study.metrics[n].get(f"few_label_scratch_{k}"),
                  study.metrics[n].get(f"few_label_frozen_{k}")) for n in names]
        pairs = [p for p in pairs if None not in p]
        if pairs:
            tuned = sum(f > s for f, s, _ in pairs)
            frozen = sum(z > s for _, s, z in pairs)
            gain = float(np.mean([f - s for f, s, _ in pairs]))
            sentences.append(f"with {count:,} labels, fine-tuning beats training from scratch for {tuned} of "
                             f"{len(pairs)} encoders (mean gain {gain:+.3f}) and the frozen encoder beats it for {frozen}")
    cfg = study.cfg.evaluate
    return "\n".join([
        "## Pretraining with few labels",
        "",
        "Each cell: test accuracy of a classifier (the encoder, then batch norm and a linear layer) trained on that "
        f"many labelled train images (class-balanced) for {cfg.few_label_steps} Adam steps (lr {cfg.few_label_lr:g}): "
        "frozen pretrained encoder / fine-tuned pretrained encoder / the same architecture from scratch.",
        "",
        table([("model", "model", str), *[(f"{c:,} labels", str(k), str) for k, c in zip(labels, counts)]], rows),
        "",
        f"![few labels](figures/{path})",
        "",
        "What it shows, counted from the table: " + "; ".join(sentences) + ". A fixed, small step budget favours "
        "whatever starts closest to a good classifier; with all labels and more steps, the scratch models would "
        "catch up further.",
        "",
    ])


def _pm(digits: int, std_key: str) -> Callable[[dict], str]:
    """'mean ± std' of a row (the spread at `std_key`), for a column whose key is the mean."""
    def fmt(row: dict, key: str) -> str:
        value, std = row.get(key), row.get(std_key)
        if value is None:
            return "–"
        return f"{value:.{digits}f} ± {std:.{digits}f}" if std else f"{value:.{digits}f}"
    fmt.row_wise = True  # type: ignore[attr-defined]
    return fmt


def generative(study: Study) -> str | None:
    names = study.having("fid")
    if not names:
        return None
    cfg = study.cfg
    k = len(study.manifest["classes"])
    real = study.evaluator["real_vs_real"]
    floor = {"model": "real: train images vs test split (floor)", **real}
    rows = [floor] + [{"model": n, **study.metrics[n]} for n in names]
    sets = {study.metrics[n].get("sample_sets", 1) for n in names}
    return "\n".join([
        "## Generative quality",
        "",
        table([("model", "model", str), ("FID ↓", "fid", _pm(1, "fid_std")),
               ("FID vs train ↓", "fid_train", _pm(1, "fid_train_std")),
               ("KID ↓", "kid_mean", _pm(1, "kid_mean_std")),
               ("precision ↑", "precision", _pm(3, "precision_std")), ("recall ↑", "recall", _pm(3, "recall_std")),
               (f"classes covered (of {k})", "classes_covered", _count), ("class KL ↓", "class_kl", _num(3)),
               ("memorization", "memorization", _num(2)),
               ("training images", "images_seen", _int), ("train time (s)", "train_seconds", _num(1)),
               ("images/s", "images_per_second", _int), ("sampling (s / 1,000)", "sample_seconds_per_1000", _sig),
               ("training ended", "health", _health)], rows),
        "",
        f"Each generative model trained on the same budget of {cfg.budget.images:,} real images (`budget.images`), "
        f"whatever its batch size. " + (
            f"Mean ± standard deviation over {'/'.join(str(s) for s in sorted(sets))} disjoint sets of "
            f"{cfg.evaluate.n_generated:,} generated images each (one training seed): the spread says how much of a "
            "difference the sampling alone can make, not what another training seed would. "
            if len(study.seeds) == 1 else
            f"Mean ± standard deviation over the {len(study.seeds)} training seeds ({', '.join(map(str, study.seeds))}), "
            f"each scored as the mean of {'/'.join(str(s) for s in sorted(sets))} disjoint sets of "
            f"{cfg.evaluate.n_generated:,} generated images; classes covered and times are means over the seeds. ")
        + "All measured in the "
        f"evaluator CNN's {cfg.evaluator.feature_dim}-dimensional penultimate feature space (not Inception's: the "
        "numbers compare models within this study, not with published FIDs). FID and KID (cubic polynomial kernel, "
        f"unbiased, over {cfg.evaluate.kid_subsets} random subsets of {cfg.evaluate.kid_subset_size}) compare the "
        f"generated images with the {study.manifest['splits']['test']['images']:,} images of the test split, which "
        "no training run and no choice looked at; FID against the train split stands beside it (a generator that "
        "fits its training images better than the digits' distribution scores lower there than on test). Precision "
        f"and recall (k-nearest-neighbour manifolds, Kynkäänniemi et al. 2019, k = {cfg.evaluate.knn_k}) compare "
        "with an equal number of test images, sampled with the study's seed. Memorization: the median over the "
        "generated images of the distance to the nearest training image over the distance to the nearest "
        "validation image (pixels). Real images no model saw give "
        f"{real.get('memorization_control', float('nan')):.2f} (the test split; below 1 because the train split is "
        f"the larger set; in the evaluator's features {real.get('memorization_features_control', float('nan')):.2f}), "
        "copies of training images 0 (the floor's row: training images themselves); a generator well below the test "
        "images' ratio sits closer to what it trained on than to unseen digits, one that only favours typical "
        "digits does not (it nears both splits alike). A class is "
        f"covered when the evaluator assigns it at least {cfg.evaluate.coverage_min_share:g} × 1/{k} of the samples "
        f"(all sets together); class KL is the KL divergence of the predicted-class histogram from uniform (0: "
        f"balanced; ln {k} ≈ {np.log(k):.3f}: a single class). The first row is the floor: the same code scoring "
        f"{cfg.evaluate.n_generated:,} real training images as if generated. Train time counts optimizer steps only (where the rest of each "
        "stage's time goes: below); sampling is the evaluation's time to draw 1,000 images (one network pass for the "
        "VAE and the GANs, one per step for diffusion). \"Training ended\": ok, ⚠ collapsed (the last curve point covers "
        f"{COLLAPSE}) or ⚠ blew up (a loss ended {BLOW_UP:g} times above its best step): the training "
        "stage's own verdict (runs/<m>-<seed>/train/health.json), also a warning line of the stage and an MLflow tag.",
        "",
        "Samples (the first 64 of the generated images):",
        "",
        images(study, names, "samples"),
        "",
    ])


def recipes(study: Study) -> str | None:
    """What differs between the generators beyond the mechanisms compared: the equal budget is images, not steps."""
    names = study.having("fid")
    if not names:
        return None
    rows = []
    for n in names:
        c, m = study.cfg.model(n), study.metrics[n]
        lr = (f"{c.lr_g:g} / {c.lr_d:g}" if hasattr(c, "lr_g") else f"{c.lr:g}")
        averages = MODELS[n].family in ("gan", "diffusion") and study.cfg.ema.half_life_images > 0
        rows.append({"model": n, "batch": c.batch_size, "steps": round(m["images_seen"] / c.batch_size),
                     "lr": lr, "optimizer": c.optimizer, "objective": getattr(c, "objective", None) or "–",
                     "ema": f"{study.cfg.ema.half_life_images:,} images" if averages else "none",
                     "params": m.get("parameters"), "d_params": m.get("discriminator_parameters"),
                     "train_seconds": m["train_seconds"]})
    ema = study.cfg.ema
    return "\n".join([
        "## Recipes",
        "",
        table([("model", "model", str), ("batch size", "batch", _int), ("optimizer steps", "steps", _int),
               ("learning rate (G / D)", "lr", str), ("optimizer", "optimizer", str), ("objective", "objective", str),
               ("EMA half-life", "ema", str), ("parameters (generator / denoiser / VAE)", "params", _int),
               ("discriminator parameters", "d_params", _int), ("train time (s)", "train_seconds", _num(1))], rows),
        "",
        f"\"Same training budget\" means the same {study.cfg.budget.images:,} training images for every model; this "
        "table shows what is not equal: the batch size sets the number of optimizer steps, and each model keeps its "
        "paper's optimizer, objective and its own learning rate (*Tuning effort*). Every generator that averages is "
        f"scored as a moving average of its weights with one half-life in images ({ema.half_life_images:,}, reached "
        + (f"after {round(ema.half_life_images / ema.rampup):,} images; `ema` in params.yaml)"
           if ema.rampup else "from the first step; `ema` in params.yaml)") + ", whatever its batch size.",
        "",
    ])


def _health(v: Any) -> str:
    return "–" if v is None else ("ok" if v == "ok" else f"⚠ {v.replace('_', ' ')}")


PHASES = {"train": ["startup", "setup", "steps", "epoch_end", "curve", "checkpoint", "tracking", "flop_count", "peak",
                    "write", "export", "other"],
          "eval": ["startup", "setup", "sampling", "metrics", "analysis", "write", "tracking", "other"]}


def time_profile(study: Study) -> str | None:
    """Where each stage's wall time went (profile.json of every training and evaluation stage, first seed)."""
    names = [n for n in study.metrics if "train_profile" in study.metrics[n] and "eval_profile" in study.metrics[n]]
    if not names:
        return None
    rows, totals = [], {"train": 0.0, "eval": 0.0, "steps": 0.0}
    for n in names:
        m = study.metrics[n]
        tp, ep = m["train_profile"], m["eval_profile"]
        row = {"model": n, "train_wall": tp["wall"], "steps": tp.get("steps", 0.0),
               "overhead": tp["wall"] - tp.get("steps", 0.0), "eval_wall": ep["wall"],
               "share": (tp["wall"] - tp.get("steps", 0.0)) / tp["wall"] if tp["wall"] else 0.0}
        row["largest"] = ", ".join(f"{k} {tp[k]:.1f}" for k in sorted(
            (k for k in PHASES["train"] if k != "steps" and k in tp), key=lambda k: -tp[k])[:3])
        row["eval_largest"] = ", ".join(f"{k} {ep[k]:.1f}" for k in sorted(
            (k for k in PHASES["eval"] if k in ep), key=lambda k: -ep[k])[:2])
        rows.append(row)
        totals["train"] += tp["wall"]
        totals["eval"] += ep["wall"]
        totals["steps"] += tp.get("steps", 0.0)
    worst = max(rows, key=lambda r: r["overhead"])
    evaluation = max(rows, key=lambda r: r["eval_wall"])
    total = totals["train"] + totals["eval"]
    return "\n".join([
        "## Where the time goes",
        "",
        table([("model", "model", str), ("train stage (s)", "train_wall", _num(1)), ("of it steps (s)", "steps", _num(1)),
               ("outside steps (s)", "overhead", _num(1)), ("share outside", "share", lambda v: f"{v:.0%}"),
               ("largest other parts (s)", "largest", str), ("evaluate stage (s)", "eval_wall", _num(1)),
               ("its largest parts (s)", "eval_largest", str)], rows),
        "",
        f"Wall time of each stage from process start to its last file (runs/<m>-<seed>/train/profile.json and "
        f"eval/profile.json: start-up and imports, set-up, optimizer steps, end-of-epoch work, curve points, "
        f"checkpoint writes, tracking, model files and export). The {len(rows)} models' stages took {total / 60:.1f} "
        f"minutes in all, {totals['steps'] / 60:.1f} of them in optimizer steps ({totals['steps'] / total:.0%}); "
        f"the training stages {totals['train'] / 60:.1f} minutes, the evaluation stages {totals['eval'] / 60:.1f}. "
        f"Most time outside the steps: `{worst['model']}` ({worst['overhead']:.1f} s: {worst['largest']}); the "
        f"longest evaluation: `{evaluation['model']}` ({evaluation['eval_wall']:.1f} s). Times depend on the "
        f"machine: compare them within one run of the study.{_machines(study)}",
        "",
        *_against_peak(study, names),
    ])


def _machines(study: Study) -> str:
    """What the training stages ran on (timing.json's `machine`), with the seeds each ran, where recorded."""
    seeds: dict[str, set[int]] = {}
    for runs in study.by_seed.values():
        for seed, m in runs.items():
            if m.get("machine"):
                seeds.setdefault(m["machine"], set()).add(seed)
    if not seeds:
        return ""
    if len(seeds) == 1:
        return f" The training stages ran on {next(iter(seeds))}."
    ordered = sorted(seeds.items(), key=lambda kv: min(kv[1]))
    return " The training stages ran on " + "; ".join(
        f"{name} (seed{'s' * (len(s) > 1)} {', '.join(map(str, sorted(s)))})" for name, s in ordered) + "."


def _against_peak(study: Study, names: list[str]) -> list[str]:
    """The optimizer steps against the machine: FLOPs per training image (counted on one step of each phase of
    the run), the steps' GFLOP/s and their share of the FP32 matrix-multiply peak each stage measured."""
    rows = [{"model": n, **study.metrics[n]} for n in names if study.metrics[n].get("peak_gflops")]
    if not rows:
        return []
    peaks = sorted(r["peak_gflops"] for r in rows)
    best = max(rows, key=lambda r: r["peak_share"])
    worst = min((r for r in rows if r["model"] in study.having("fid")), key=lambda r: r["peak_share"], default=None)
    mflop = lambda v: f"{v / 1e6:,.1f}"  # noqa: E731
    return [
        "The optimizer steps against what this machine can do:",
        "",
        table([("model", "model", str), ("MFLOP per training image", "flops_per_image", mflop),
               ("images/s", "images_per_second", _num(0)), ("GFLOP/s", "gflops", _num(1)),
               ("share of the peak", "peak_share", lambda v: f"{v:.0%}")], rows),
        "",
        f"FLOPs are those of matrix multiplies, convolutions and recurrent layers (forward, backward and the "
        f"penalties' double backward; 2 per multiply-add), counted with torch's FlopCounterMode on one real step "
        f"of each phase of a run (a ProGAN resolution, a penalty's step) and weighted by the phase's steps (runs/<m>-<seed>/train/timing.json: "
        f"`flops_by_phase`); elementwise work is not counted, so a step full of it shows a low share. The peak is "
        f"the FP32 rate of a large matrix multiply timed in each training stage's own process at its thread count: "
        f"median {float(np.median(peaks)):.0f} GFLOP/s over the {len(rows)} stages (from {peaks[0]:.0f} to "
        f"{peaks[-1]:.0f}). Closest to it: `{best['model']}` ({best['peak_share']:.0%})"
        + (f"; farthest among the generative models: `{worst['model']}` ({worst['peak_share']:.0%})." if worst else "."),
        "",
    ]


def budget_curves(study: Study) -> str | None:
    names = [n for n in study.having("fid") if n in study.curves]
    if not names:
        return None
    path = fig.budget_curves({n: study.curves[n] for n in names}, study.figures / "budget_curves.png")
    points = study.cfg.budget.curve_points
    leaders = []
    for i in range(points):
        at = {n: study.curves[n][i] for n in names if len(study.curves[n]) > i and study.curves[n][i]["fid"] is not None}
        if at:
            best = min(at, key=lambda n: at[n]["fid"])
            leaders.append((at[best]["images"], best, at[best]["fid"]))
    changes = [leaders[0]] + [b for a, b in zip(leaders, leaders[1:]) if a[1] != b[1]]
    told = "; ".join(f"from {img:,} images `{n}` (FID {f:.0f})" for img, n, f in changes)
    return "\n".join([
        "## The comparison over the budget",
        "",
        f"At every {100 // points if 100 % points == 0 else round(100 / points, 1)} % of the budget each generative model "
        f"draws {study.cfg.evaluate.curve_samples} images from fixed latents and the evaluator scores them: FID "
        "(against the whole validation split: training never sees the test split), recall (against as many "
        "validation images) and classes covered. Curves, not endpoints: the figure shows which model is ahead at "
        "every budget, against images seen and against training seconds on this machine. Sample counts and the "
        "reference differ from the final evaluation's, so the curve's last FID is close to, not equal to, the "
        "table's.",
        "",
        f"![FID over the budget](figures/{path})",
        "",
        f"Lowest FID at each curve point, as it changes hands: {told}.",
        "",
    ])


def _classes(k: float) -> str:
    return f"{_count(k)} class" if k == 1 else f"{_count(k)} classes"


def _point_ranges(points: list[dict], budget: int) -> str:
    """Curve points at 10, 20, 30, 70 % of the budget -> 'at 10–30, 70 % of the budget'."""
    shares = [round(100 * p["images"] / budget) for p in points]
    spans: list[list[int]] = []
    step = round(100 * points[0]["images"] / budget) if points else 0
    for share in shares:
        if spans and share - spans[-1][1] <= max(step, 1) + 1 and share > spans[-1][1]:
            spans[-1][1] = share
        else:
            spans.append([share, share])
    return "at " + ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in spans) + " % of the budget"


def mode_collapse(study: Study) -> str | None:
    names = [n for n in study.having("fid") if n in study.curves]
    if not names:
        return None
    k = len(study.manifest["classes"])
    budget = study.cfg.budget.images
    verdicts = []
    for n in names:
        c = study.curves[n]
        collapsed = [p for p in c if is_collapsed(p["classes_covered"], k)]
        missing = [p for p in c if p["classes_covered"] < k]
        final = c[-1]["classes_covered"]
        if missing:
            worst = min(missing, key=lambda p: p["classes_covered"])
            fewest = f"fewest {_classes(worst['classes_covered'])}, at {worst['images']:,} images"
        if collapsed and is_collapsed(final, k):
            verdicts.append(f"`{n}` ends collapsed: {_classes(final)} at the end; {most_collapsed(k)} or fewer "
                            f"{_point_ranges(collapsed, budget)} ({fewest})")
        elif collapsed:
            verdicts.append(f"`{n}` collapsed {_point_ranges(collapsed, budget)} ({fewest}) and recovered: "
                            f"{_classes(final)} at the end")
        elif missing:
            verdicts.append(f"`{n}` never collapsed; it missed classes {_point_ranges(missing, budget)} "
                            f"({fewest}); {_classes(final)} at the end")
        else:
            verdicts.append(f"`{n}` covered all {k} classes at every curve point")
    cfg = study.cfg.evaluate
    return "\n".join([
        "## Mode collapse",
        "",
        f"At each curve point the evaluator labels the {cfg.curve_samples} images each generative model draws from "
        f"fixed latents (the *classes covered* panel above): a class counts with at least "
        f"{cfg.coverage_min_share:g} × 1/{k} of the samples. A model collapsed when it covers {COLLAPSE} "
        f"({most_collapsed(k)} or fewer of {k}), the rule of the training stage's own verdict.",
        "",
        *[f"- {v}" for v in verdicts],
        "",
    ])


def _per_seed(study: Study, names: list[str], key: str = "fid") -> dict[str, list[float]]:
    """Each model's value in each training seed, in seed order (its run's row of the results): what a claim tests."""
    r = study.results
    values = r[(r["metric"] == key) & r["sample_set"].isna()].groupby("model", sort=False)["value"].agg(list)
    return {n: values[n] for n in names}


def _no_claim(study: Study, short: bool = False) -> str:
    n = len(study.seeds)
    seeds = f"{n} training seed{'s' if n > 1 else ''}"
    return (f"no claim with {seeds}" if short else
            f"{seeds}: no claim (a difference is claimed only with at least {MIN_SEEDS} seeds, by a Welch t-test "
            "over them)")


def variants(study: Study) -> str | None:
    """Groups of generative models built by one class with different configs: an ablation table."""
    groups: dict[Any, list[str]] = {}
    for n in study.having("fid", "gan"):
        groups.setdefault(MODELS[n].build, []).append(n)
    out: list[str] = []
    for names in (g for g in groups.values() if len(g) > 1):
        configs = {n: study.cfg.model(n).model_dump() for n in names}
        keys = [k for k in configs[names[0]] if len({str(c[k]) for c in configs.values()}) > 1]
        rows = [{"model": n, **{k: str(configs[n][k]) for k in keys}, **study.metrics[n]} for n in names]
        ref = study.metrics[names[0]]
        # one family of claims: every variant against the reference, Holm-corrected together
        found = family(_per_seed(study, names), [(n, names[0]) for n in names[1:]])
        tests = {t.a: t for t in found} if found else {}
        changes = []
        for n in names[1:]:
            m = study.metrics[n]
            off = ", ".join(f"{k} {configs[n][k]}" for k in keys if configs[n][k] != configs[names[0]][k])
            test = tests[n] if tests else None
            verdict = (_no_claim(study, short=True) if test is None else
                       f"{'better' if test.diff < 0 else 'worse'}: {test.describe()}" if test.separated else
                       f"not separated: {test.describe()}")
            changes.append(f"`{n}` ({off}): FID {ref['fid']:.1f} ± {ref.get('fid_std', 0):.1f} → {m['fid']:.1f} ± "
                           f"{m.get('fid_std', 0):.1f} ({verdict}), classes covered "
                           f"{_count(ref['classes_covered'])} → {_count(m['classes_covered'])}, train time "
                           f"{ref['train_seconds']:.0f} → {m['train_seconds']:.0f} s")
        out += [
            f"## Ablation: {', '.join(f'`{n}`' for n in names)}",
            "",
            f"The same code and training budget ({study.cfg.budget.images:,} images) with one mechanism's config "
            "value changed"
            + (f", each variant at its own {' and '.join(tuned)} (its best in *Tuning effort* when the sweep has run)"
               if (tuned := [w for k, w in (("batch_size", "batch size"), ("lr_g", "learning rate")) if k in keys])
               else "")
            + f" (FID: mean ± std over the {'training seeds' if len(study.seeds) > 1 else 'sample sets'}):",
            "",
            table([("model", "model", str), *[(k, k, str) for k in keys], ("FID ↓", "fid", _pm(1, "fid_std")),
                   ("precision", "precision", _pm(3, "precision_std")), ("recall", "recall", _pm(3, "recall_std")),
                   ("classes covered", "classes_covered", _count), ("class KL", "class_kl", _num(3)),
                   ("train time (s)", "train_seconds", _num(1))], rows),
            "",
            f"Against `{names[0]}`, as measured here: " + "; ".join(changes) + ". A difference is claimed where a "
            f"two-sided Welch t-test over the training seeds' FIDs rejects equal means at α = {ALPHA:g} after Holm's "
            f"correction over this ablation's {len(names) - 1} comparisons (difference: variant minus `{names[0]}`, "
            "with its 95 % interval).",
            "",
        ]
    return "\n".join(out) or None


def tuning(study: Study) -> str | None:
    t = study.tuning
    if not t:
        return None
    names = [n for n in study.metrics if n in t["results"]]
    from pipeline.tuning import SELECTION_SEEDS as seeds
    head = [
        "## Tuning effort",
        "",
        f"The same learning-rate grid for every generator (a GAN's lr_g = lr_d, the lr of ddpm and the VAE), each "
        f"value one DVC experiment at the "
        f"study's budget of {t['budget_images']:,} images, trained at the selection seed {seeds[0]} (`make sweep`), "
        "which no reported number uses: the tables above come from the reporting seeds, so no model is reported on "
        "the run its value was picked from. The best value is the one of lowest mean FID against the validation "
        "split (the test split decides nothing). Rules fixed before the grid ran (pipeline/tuning.py): a best value "
        "at an end of the grid extends it by one step; a best value not ahead of the runner-up by more than its own "
        f"sample-set spread sends both to the second selection seed ({seeds[-1]}), and the mean decides.",
        "",
    ]
    left = (" Not shown: cells run with another setting of the model than params.yaml's (its params or the splits "
            "changed after the sweep), or at a reporting seed (`make sweep SWEEP_MODELS=<model>` reruns a row): "
            f"{', '.join(t['left_out'])}." if t.get("left_out") else "")
    if not names:
        return "\n".join(head + [("No cell of the grid stands for the study's current setting: run `make sweep`."
                                  + left).strip(), ""])
    rows = []
    for n in names:
        single = len(t["results"][n]) < 2  # nothing to compare: no best
        row = {"model": n, "best": "–" if single else t["best"][n], "used": t["used"].get(n, "–")}
        for v in t["grid"]:
            r = t["results"][n].get(v)
            if r is not None and r.get("diverged"):
                row[v] = "diverged"
            else:
                row[v] = "–" if r is None or r.get("fid") is None else \
                    f"{r['fid']:.0f} ± {r.get('fid_std') or 0:.0f} ({r['classes_covered']})" + \
                    (f" [{len(r['seeds'])} seeds]" if len(r.get("seeds", [])) > 1 else "")
        row["own best"] = "–" if single else "yes" if row["used"] == row["best"] else "no"
        rows.append(row)
    compared = [n for n in names if len(t["results"][n]) > 1]
    off = [n for n in compared if t["used"].get(n) != t["best"][n]]
    todo = t.get("next", {})
    edge = [f"`{n}` (next: {todo[n]['extend']})" for n in names if "extend" in todo.get(n, {})]
    close = [f"`{n}` ({todo[n]['tie'][0]} against {todo[n]['tie'][1]})" for n in names if "tie" in todo.get(n, {})]
    missing = [f"`{n}` at {v}" for n in names for v in t["grid"] if v not in t["results"][n]]
    return "\n".join(head + [
        "Cells: validation FID ± std over sample sets (classes covered); – where no experiment ran.",
        "",
        table([("model", "model", str), *[(f"lr {v}", v, str) for v in t["grid"]], ("best", "best", str),
               ("params.yaml", "used", str), ("uses its best", "own best", str)], rows),
        "",
        ((f"Models with one cell only (no learning rate compared in the current setting): "
          f"{_names([n for n in names if n not in compared])}." if len(compared) < len(names) else "")
         + ("" if not compared else
            f" Models not at their own best value of the grid: {_names(off)}. "
            + (f"Best at an end of the grid, so the rules extend it: {', '.join(edge)}. " if edge else
               "Every model's best value lies inside the grid. ")
            + ("Best value not ahead of the runner-up by more than its sample-set spread, to rerun at the second "
               f"selection seed: {', '.join(close)}." if close else
               "Every model's best value is ahead of its runner-up by more than its sample-set spread."))
         + (f" Cells not run: {', '.join(missing)}." if missing else "") + left).strip(),
        "",
        *_batch_stage(t, names),
    ])


def _batch_stage(t: dict, names: list[str]) -> list[str]:
    """The batch-size stage's table: batch sizes at each model's best learning rate."""
    rows_in = {n: t["batch"][n] for n in names if n in t.get("batch", {})}
    if not rows_in:
        return []
    sizes = sorted({int(b) for row in rows_in.values() for b in row})
    rows = []
    for n, row in rows_in.items():
        out = {"model": n, "lr": " / ".join(sorted({c["lr"] for c in row.values()}, key=float)),
               "best": t.get("batch_best", {}).get(n, "–"), "used": str(t.get("batch_used", {}).get(n, "–"))}
        for b in sizes:
            c = row.get(str(b))
            out[str(b)] = "–" if c is None or c.get("fid") is None else \
                f"{c['fid']:.0f} ± {c.get('fid_std') or 0:.0f} ({c['classes_covered']})"
        out["own best"] = "–" if out["best"] == "–" else "yes" if out["best"] == out["used"] else "no"
        rows.append(out)
    todo = t.get("next", {})
    moved = [f"`{n}` (batch {todo[n]['batch']['set']}, then lr {' and '.join(todo[n]['batch']['lr_grid'])})"
             for n in rows_in if "batch" in todo.get(n, {})]
    close = [f"`{n}` ({todo[n]['batch_tie'][0]} against {todo[n]['batch_tie'][1]})" for n in rows_in
             if "batch_tie" in todo.get(n, {})]
    return [
        "Then the batch size at each model's best learning rate (`make sweep`'s second stage; at the batch size "
        "params.yaml uses, or used before another one won, the cell is the learning-rate grid's, the same run). "
        "Cells as above.",
        "",
        table([("model", "model", str), ("lr", "lr", str), *[(f"batch {b}", str(b), str) for b in sizes],
               ("best", "best", str), ("params.yaml", "used", str), ("uses its best", "own best", str)], rows),
        "",
        (("Another batch size wins, so the rules ask for it and for the learning rate's neighbours at it: "
          f"{', '.join(moved)}. " if moved else "Every model's batch size in use is its best of this stage. ")
         + (f"Not ahead of the runner-up by more than its sample-set spread: {', '.join(close)}." if close else
            "")).strip(),
        "",
    ]


def choices(study: Study) -> str | None:
    """Every value params.yaml sets away from its model's default (the paper's or the book's value, in the
    model's config class), and what stands behind it in the study's data: the learning-rate grid where it has a
    cell for the model, nothing stored otherwise."""
    t = study.tuning or {}
    swept = set(t.get("results", {}))
    rows = []
    for n in study.metrics:
        cfg = study.cfg.model(n)
        defaults = type(cfg)()
        for key in type(cfg).model_fields:
            value, default = getattr(cfg, key), getattr(defaults, key)
            if value == default:
                continue
            cells = len(t.get("results", {}).get(n, {}))
            source = ("set in params.yaml; no screen stored" if key not in LR_KEYS or n not in swept else
                      "learning-rate grid (*Tuning effort*)" if cells > 1 else
                      "learning-rate grid of an earlier setting (its cells left out in *Tuning effort*)")
            rows.append({"model": n, "key": key, "value": str(value), "default": str(default), "source": source})
    if not rows:
        return None
    unsupported = sorted({r["model"] for r in rows if r["source"].startswith("set in")})
    return "\n".join([
        "## Choices",
        "",
        "Every value params.yaml sets away from the model's default (its config class's value: the paper's or the "
        "book's where there is one), and the experiment of the study behind it. A value with no stored screen is a "
        "setting chosen by hand: the study's results hold for it, not for the best value of that knob.",
        "",
        table([("model", "model", str), ("key", "key", str), ("params.yaml", "value", str),
               ("default", "default", str), ("chosen by", "source", str)], rows),
        "",
        f"{len(rows)} values away from their defaults in {len({r['model'] for r in rows})} models; "
        f"{sum(r['source'].startswith('set in') for r in rows)} of them without a stored screen "
        f"({_names(unsupported) if unsupported else 'none'}).",
        "",
    ])


def growth(study: Study) -> str | None:
    names = [n for n in study.family("gan") if "schedule_alpha" in study.arrays[n]]
    out: list[str] = []
    for n in names:
        path = fig.growth_schedule(study.arrays[n], n, study.figures / f"{n}_schedule.png")
        shown = []
        for res in sorted({r["resolution"] for r in study.histories[n] if "resolution" in r}):
            last = [r["epoch"] for r in study.histories[n] if r.get("resolution") == res][-1]
            src = study.run_dir(n) / "grids" / f"samples_{last:03d}.png"
            if src.is_file():
                shutil.copyfile(src, study.figures / f"{n}_samples_{int(res)}px.png")
                shown.append((int(res), last))
        if len(shown) < 2:
            continue  # not growing: nothing to show per resolution
        out += [
            f"## Progressive growing: `{n}`",
            "",
            f"![schedule](figures/{path})",
            "",
            "Samples (EMA generator, fixed latents) at the end of each resolution, upsampled for display:",
            "",
            " ".join(f"![{r} px](figures/{n}_samples_{r}px.png)" for r, _ in shown),
            "",
            " · ".join(f"{r}×{r} (epoch {e})" for r, e in shown),
            "",
        ]
    return "\n".join(out) or None


GRID_CAPTIONS = {
    "ink_arithmetic": "Latent arithmetic: each row one latent, plus -2, -1, 0, +1, +2 times the ink vector (mean latent "
                      "of the thickest-stroked quarter of 2,000 samples minus that of the thinnest quarter).",
    "class_interpolation": "Interpolation between class-mean latents (the mean latent of the samples the evaluator "
                           "puts in a class), consecutive classes row by row.",
    "style_mixing": "Style mixing: top row and left column are two sets of sources; each cell takes the coarse "
                    "styles (4×4 and 8×8 layers) from its row's source and the fine ones from its column's.",
    "stochastic_variation": "Stochastic variation: one w, seven noise draws, and the per-pixel standard deviation "
                            "over 32 draws (last, scaled to its maximum): noise moves stroke edges, not digits.",
    "truncation": "Truncation trick: rows are latents, columns psi = -1, -0.5, 0, 0.5, 0.7, 1 (0: the mean w).",
}


def gan_analyses(study: Study) -> str | None:
    out: list[str] = []
    for n in study.family("gan"):
        shown = [k for k in GRID_CAPTIONS if (study.figures / f"{n}_{k}.png").is_file()]
        if not shown:
            continue
        m = study.metrics[n]
        out += [f"## What `{n}` shows", ""]
        if "ink_vector_ink_gain" in m:
            out += [f"Adding the ink vector raises the mean pixel value of 500 samples by {m['ink_vector_ink_gain']:+.4f} "
                    f"and keeps the evaluator's label for {m['ink_vector_class_kept']:.0%} of them; the decoded "
                    f"class-mean latents are recognised as their class {m['class_mean_latents_recognised']:.0%} of "
                    "the time.", ""]
        for k in shown:
            out += [GRID_CAPTIONS[k], "", f"![{k}](figures/{n}_{k}.png)", ""]
    return "\n".join(out) or None


def latent_paths(study: Study) -> str | None:
    """W against Z: perceptual path length and linear separability of every GAN's latent spaces (the StyleGAN
    paper's two measures), beside the numbers that say whether a short path is a smooth mapping or few images."""
    names = study.having("ppl_z_full")
    if not names:
        return None
    e = study.cfg.evaluate
    rows = [{"model": n, **study.metrics[n]} for n in names]
    return "\n".join([
        "## W against Z: path length and linear separability",
        "",
        table([("model", "model", str), ("PPL z, full", "ppl_z_full", _sig), ("PPL z, end", "ppl_z_end", _sig),
               ("PPL w, full", "ppl_w_full", _sig), ("PPL w, end", "ppl_w_end", _sig),
               ("separability z ↓", "separability_z", _num(2)), ("separability w ↓", "separability_w", _num(2)),
               ("FID ↓", "fid", _num(1)), ("recall ↑", "recall", _num(3)), ("classes", "classes_covered", _count)],
              rows),
        "",
        f"Perceptual path length (Karras et al. 2019): over {e.ppl_pairs:,} pairs of latents, the squared speed at "
        "which the image moves at t along the path between them (the paper's squared distance between the images "
        "at t and t + ε over ε², at its limit ε → 0: a derivative, by forward-mode differentiation), trimmed to the "
        "1st–99th percentiles and averaged; *full*: t uniform along the path, *end*: t at its start. Slerp in z, "
        "lerp in w (StyleGAN's intermediate latent; – for a generator without one); the generator's noise inputs "
        "stay fixed along each path. The distance is measured in the "
        "evaluator's features (the paper's LPIPS needs VGG weights this study cannot fetch), so the lengths compare "
        "within the study only. A short path is a smooth generator or one that draws few distinct images: read it "
        f"beside FID, recall and classes covered. Linear separability: {e.separability_samples:,} latents labelled "
        "by the evaluator, the more confident half kept; for each class a linear SVM on the latent splits "
        "\"this class\" from the rest, and the score is exp of the summed entropy of the label left on each side "
        "(1: every class a half-space; lower is more linear).",
        "",
    ])


def style_mixing(study: Study) -> str | None:
    """FID of images styled by several latents (the StyleGAN paper's Table 2), for every style-based generator."""
    names = study.having("fid_mixed_1")
    if not names:
        return None
    counts = mixed_counts(study.metrics[names[0]])
    rows = [{"model": n, "mixing_prob": study.cfg.model(n).mixing_prob, **study.metrics[n]} for n in names]
    return "\n".join([
        "## Style mixing: FID of images mixed from several latents",
        "",
        table([("model", "model", str), ("mixing_prob (training)", "mixing_prob", _sig),
               *[(f"{k} latent{'s' if k > 1 else ''}", f"fid_mixed_{k}", _num(1)) for k in counts]], rows),
        "",
        "In the column of k latents, each image's style layers take their w from k latents, switched at k − 1 "
        "crossover layers drawn at random per image (the StyleGAN paper's Table 2); FID against the test "
        f"split on {study.cfg.evaluate.n_generated:,} images a column, one draw (the column of one latent is a plain "
        "sample of the same size, so it differs from *Generative quality*'s mean over sample sets by sampling noise). "
        "Mixing regularization trains with such mixes, so that the FID of mixed images should rise less; the test of "
        "that claim is in *What the lecture claims*.",
        "",
    ])


def gan_curves(study: Study) -> str | None:
    gans = study.family("gan")
    if not gans:
        return None
    path = fig.losses_by_objective({n: study.histories[n] for n in gans},
                                   {n: study.cfg.model(n).objective for n in gans}, study.figures / "curves_gans.png")
    return "\n".join(["## GAN training curves", "",
                      "Per epoch, one row per objective (their losses live on different scales):", "",
                      f"![GAN curves](figures/{path})", ""])


def findings(study: Study) -> str | None:
    """The claims of the study, each computed from the numbers with its support stated."""
    gen = study.having("fid")
    if not gen:
        return None
    m, k = study.metrics, len(study.manifest["classes"])
    seen = {n: m[n].get("images_seen") for n in gen}
    budget = study.cfg.budget.images
    same = [n for n in gen if seen[n] == budget]  # images_seen = steps x batch size
    seeds = study.seeds
    out = ["## Findings", "",
           f"_Every sentence here is computed from the metrics files: {len(seeds)} training seed"
           f"{'s' if len(seeds) > 1 else ''} ({', '.join(map(str, seeds))}), each evaluated on "
           f"{_count(m[gen[0]].get('sample_sets', 1))} disjoint sample sets. \"X beats Y\" is claimed only with at least "
           f"{MIN_SEEDS} training seeds, where a two-sided Welch t-test over the per-seed FIDs rejects equal means at "
           f"α = {ALPHA:g} after Holm's correction over the family of comparisons (here: the ranking's neighbours)._",
           ""]
    if len(same) == len(gen):
        out.append(f"- Same training budget: every generative model saw {budget:,} training images "
                   f"({', '.join(f'`{n}` {seen[n]:,.0f}' for n in gen)}).")
    else:
        off = [f"`{n}` {seen[n]:,.0f}" for n in gen if n not in same]
        out.append(f"- Not every model saw `budget.images` = {budget:,} training images (a batch size that does not "
                   f"divide it drops the remainder): {', '.join(off)}.")
    ranked = sorted(gen, key=lambda n: m[n]["fid"])
    spread = "seeds" if len(seeds) > 1 else "sample sets"
    out.append(f"- Ranking by mean FID (± std over {spread}): "
               + " < ".join(f"`{n}` {m[n]['fid']:.0f} ± {m[n].get('fid_std', 0):.0f}" for n in ranked) + ".")
    tests = family(_per_seed(study, ranked), list(zip(ranked, ranked[1:])))
    if tests is None:
        out.append(f"- Neighbours in that ranking: {_no_claim(study)}; the ranking is what this run measured.")
    else:
        firm = [f"`{t.a}` beats `{t.b}` ({t.describe()})" for t in tests if t.separated]
        ties = [f"`{t.a}` and `{t.b}` ({t.describe()})" for t in tests if not t.separated]
        if firm:
            out.append("- Neighbours in that ranking separated by the test: " + "; ".join(firm) + ".")
        if ties:
            out.append("- Neighbours not separated (no claim): " + "; ".join(ties) + ".")
    full = [n for n in gen if m[n]["classes_covered"] == k and m[n]["recall"] >= 0.5]
    out.append(f"- All {k} classes covered with recall ≥ 0.5: {_names(full)}; not: "
               + (", ".join(f"`{n}` ({_classes(m[n]['classes_covered'])}, recall {m[n]['recall']:.2f})"
                            for n in gen if n not in full) or "none") + ".")
    flagged = [n for n in m if m[n].get("health", "ok") != "ok"]
    if flagged:
        out.append("- Flagged by their own training stage: " + "; ".join(
            f"`{n}`: {m[n]['health_reason']}" for n in flagged) + ".")
    curves = {n: study.curves[n] for n in gen if n in study.curves}
    if curves:
        fastest = min(curves, key=lambda n: m[n]["train_seconds"])
        out.append(f"- Cheapest to train: `{fastest}` ({m[fastest]['train_seconds']:.0f} s for the budget, "
                   f"{m[fastest]['images_per_second']:,.0f} images/s); slowest: "
                   f"`{max(curves, key=lambda n: m[n]['train_seconds'])}` "
                   f"({max(m[n]['train_seconds'] for n in curves):.0f} s).")
    return "\n".join(out + [""])


def diffusion(study: Study) -> str | None:
    """What diffusion shows that the others do not: its schedule, a reverse trajectory, and the cost of sampling."""
    names = [n for n in study.metrics if "sweep_fid" in study.arrays[n]]
    if not names:
        return None
    m, a = study.metrics, study.arrays
    out = ["## Diffusion: denoising in steps", ""]
    first = a[names[0]]
    path = fig.noise_schedules(first, study.figures / "noise_schedules.png")
    out += [f"The forward process keeps a share ᾱ_t of the image's variance at step t; the rest is noise. The "
            f"linear schedule (Ho et al. 2020) destroys the signal sooner than the cosine one (Nichol & Dhariwal "
            f"2021): ᾱ_t falls below one half at t = {_half(first, 'linear')} against t = {_half(first, 'cosine')} "
            f"(T = {study.cfg.model(names[0]).timesteps}).",
            "", f"![noise schedules](figures/{path})", ""]
    for n in names:
        cfg, arr = study.cfg.model(n), {**a[n], "sweep_seconds_per_1000": m[n]["sweep_seconds_per_1000"]}
        rows = [{"sampler": k, "eta": e, "steps": s, "fid": f, "recall": r, "classes": c, "seconds": t}
                for k, e, s, f, r, c, t in zip(arr["sweep_sampler"], arr["sweep_eta"], arr["sweep_steps"],
                                               arr["sweep_fid"], arr["sweep_recall"], arr["sweep_classes"],
                                               arr["sweep_seconds_per_1000"])]
        ddpm = next(r for r in rows if r["sampler"] == "ddpm")
        ddim = [r for r in rows if r["sampler"] == "ddim"]
        best = min(ddim, key=lambda r: r["fid"])
        near = [r for r in ddim if r["fid"] <= ddpm["fid"]]
        first_near = min(near, key=lambda r: (r["steps"], r["fid"])) if near else None
        path = fig.steps_sweep(arr, study.figures / f"{n}_steps_sweep.png")
        out += [f"### `{n}`: {cfg.schedule} schedule, T = {cfg.timesteps}, the study's samples by DDIM in "
                f"{cfg.sample_steps} steps, η = {cfg.eta:g}", "",
                "Reverse trajectories (ancestral sampling, every tenth of the way from pure noise at t = T to the "
                "image), one row per sample:", "", f"![{n} trajectory](figures/{n}_trajectory.png)", "",
                "The same starting noise denoised by DDIM with each step count of the sweep (columns):", "",
                f"![{n} by steps](figures/{n}_samples_by_steps.png)", "",
                table([("sampler", "sampler", str), ("η", "eta", lambda v: f"{v:g}"), ("steps", "steps", _int),
                       ("validation FID ↓", "fid", _num(1)),
                       ("recall ↑", "recall", _num(3)), ("classes", "classes", _count),
                       ("seconds / 1,000 samples", "seconds", _num(2))], rows), "",
                f"![{n} steps sweep](figures/{path})", "",
                f"Each row scores {cfg.sweep_samples} images from the same noise against the validation split (the "
                "screen the sampler's settings are read from; fewer images and another reference than the table's, so "
                "these FIDs compare along the sweep, not with the table). Ancestral DDPM over all "
                f"{ddpm['steps']} steps: FID {ddpm['fid']:.1f} at {ddpm['seconds']:.1f} s per 1,000 samples; the best "
                f"DDIM setting, {best['steps']} steps at η = {best['eta']:g}: FID {best['fid']:.1f} at "
                f"{best['seconds']:.2f} s ({ddpm['seconds'] / best['seconds']:.0f}× cheaper). " + (
                    f"DDIM matches or beats DDPM's FID from {first_near['steps']} steps (η = {first_near['eta']:g})."
                    if first_near else "No DDIM setting of the sweep reaches DDPM's FID (within these samples).")
                + _eta_pairs(rows, cfg.eta, cfg.steps_sweep), ""]
        others = [o for o in study.having("fid") if o != n]
        vae = [o for o in others if MODELS[o].family == "autoencoder"]
        gans = [o for o in others if MODELS[o].family == "gan"]
        tests = family(_per_seed(study, [n, *others]), [(n, o) for o in others])  # one family: n against each
        ahead = [t.b for t in tests or [] if t.separated and t.diff < 0]
        behind = [t.b for t in tests or [] if t.separated and t.diff > 0]
        cost = [m[o]["sample_seconds_per_1000"] for o in others if "sample_seconds_per_1000" in m[o]]
        if tests is None:
            against = f"`{n}` against the other generators: {_no_claim(study)}."
        else:
            against = (f"Against the other generators (Welch t-tests over the seeds' FIDs, Holm-corrected over the "
                       f"{len(others)}): `{n}` (FID {m[n]['fid']:.0f}) beats {_names(ahead) if ahead else 'none'}; is "
                       f"beaten by {_names(behind) if behind else 'none'}; not separated from "
                       f"{_names([o for o in others if o not in ahead and o not in behind]) or 'none'}. "
                       f"Of the {len(gans)} GANs, {sum(o in ahead for o in gans)} are behind it"
                       + (f"; the VAE{'s' if len(vae) > 1 else ''} ({_names(vae)}) "
                          f"{'behind' if all(o in ahead for o in vae) else 'not all behind'}" if vae else "") + ".")
        out.append(against
                   + (f" Its samples take {_sig(m[n]['sample_seconds_per_1000'])} s per 1,000 against "
                      f"{_sig(min(cost))}–{_sig(max(cost))} s for the one-pass generators "
                      f"({m[n]['sample_seconds_per_1000'] / max(cost):.0f}× the slowest of them)." if cost else ""))
        out.append("")
    return "\n".join(out)


def _eta_pairs(rows: list[dict], eta: float, steps: list[int]) -> str:
    """' FID of deterministic DDIM against DDIM at `eta`, step count by step count', when the sweep has both."""
    fid = {(r["eta"], r["steps"]): r["fid"] for r in rows if r["sampler"] == "ddim"}
    pairs = [f"{s} steps {fid[0.0, s]:.0f} against {fid[eta, s]:.0f}" for s in steps if (0.0, s) in fid and (eta, s) in fid]
    return f" FID of deterministic DDIM (η = 0) against η = {eta:g}: " + ", ".join(pairs) + "." if eta and pairs else ""


def _half(arrays: dict[str, list], kind: str) -> int:
    """The first listed step where abar_t falls below one half."""
    return next((t for t, v in zip(arrays["schedule_t"], arrays[f"abar_{kind}"]) if v < 0.5), arrays["schedule_t"][-1])


SECTIONS = [header, lecture, findings, autoencoders, linear_vs_pca, greedy, denoising, sparsity, variational, codings_maps,
            pretraining, generative, recipes, budget_curves, diffusion, mode_collapse, tuning, choices, variants, growth,
            latent_paths, style_mixing, gan_analyses, gan_curves, time_profile]
