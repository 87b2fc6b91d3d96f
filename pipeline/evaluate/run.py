"""Evaluation of one trained model, by what it can do (not by its name).

An autoencoder gets reconstruction metrics and a reconstruction grid on the test split; a generative model (the
VAE, every GAN, every diffusion model) gets FID, KID, precision/recall and class coverage against the test split
(FID against the train and validation splits beside it), as mean and spread over disjoint sample sets, the
memorization check, the time its sampling takes per 1,000 images, and a sample grid; a style-based generator also
gets the FID of images mixed from 1 to 4 latents; a diffusion model also gets FID, recall and coverage against its
number of sampling steps, on the validation split (the screen its sampler's settings are chosen from). The floor (training images scored as if generated, the same code) comes with the
evaluator.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from pipeline.clock import CLOCK
from pipeline.config import StudyConfig
from pipeline.data import Dataset, showcase
from pipeline.evaluate.evaluator import EvaluatorNet
from pipeline.evaluate.metrics import (Gaussian, RealSet, autoencoder_metrics, classifier, draw, embed, fid,
                                      embeddings_reused, generative_metrics_sets, memorization, references, set_metrics,
                                      tsne_map)
from pipeline.evaluate.paths import latent_metrics
from pipeline.evaluate.pretraining import few_label_accuracy
from pipeline.io import atomic_dir, write_json
from pipeline.models import EVAL_STAGE, build, run_name, spec
from pipeline.models.base import GAN, Autoencoder, Diffusion, Generative
from pipeline.tracking import NullTracker, run_tags
from pipeline.train.common import (batched, count_params, grid, interleave_rows, load_model, resolve_device, save_grid,
                                   seed_everything)


def evaluate_model(name: str, cfg: StudyConfig, data: Dataset, model_path: Path, net: EvaluatorNet,
                   metrics_path: Path, out_dir: Path, figures_dir: Path, tracker=None, root: Path = Path(".")) -> dict:
    """Metrics (`metrics_path`), grids and arrays (`figures_dir`: what the report draws) of one model; in `out_dir`,
    the run's small records: `timing.json` (how long sampling takes) and `profile.json` (where the stage's time
    went)."""
    tracker = tracker or NullTracker()
    with CLOCK.phase("setup"):
        device = resolve_device(cfg.device)
        model, payload = load_model(model_path, device)
        model.eval()
        seed_everything(cfg.seed)  # a fresh process starts from a random global RNG state; analyses may draw from it
        net = net.to(device)
        x_train, x_test = data.x_train.to(device), data.x_test.to(device)
        y_train, y_test = data.y_train.to(device), data.y_test.to(device)
    with CLOCK.phase("analysis"):
        metrics, grids, arrays, timing = _measure(name, cfg, data, model, payload, net, x_train, y_train, x_test,
                                                  y_test)
    stage = f"{EVAL_STAGE[spec(name).family]}@{run_name(name, cfg.seed)}"
    with tracker.run(stage, tags=run_tags(root, stage, name, cfg.seed),
                     params={"model": name, "seed": cfg.seed, "evaluate": cfg.evaluate.model_dump()}):
        with CLOCK.phase("write"):
            with atomic_dir(figures_dir) as tmp:
                for key, images in grids.items():
                    image = grid(images)
                    save_grid(image, tmp / f"{key}.png")
                    tracker.log_image(image, key=key)
                if arrays:
                    write_json(tmp / "arrays.json", arrays)
            with atomic_dir(out_dir) as tmp:
                if timing:  # times apart from the metrics, which are the same bytes on every run
                    write_json(tmp / "timing.json", timing)
        with CLOCK.phase("tracking"):
            tracker.log_metrics({k: v for k, v in {**metrics, **timing}.items() if isinstance(v, (int, float))})
            tracker.describe(description(name, payload["family"], {**metrics, **timing}))
        write_json(metrics_path, metrics)
        tracker.log_artifact(metrics_path)
        write_json(out_dir / "profile.json", CLOCK.profile())
    return metrics


def description(name: str, family: str, m: dict) -> str:
    """The evaluation run's description in MLflow: the model and its headline numbers."""
    text = f"**{name}** ({family}, seed {m['seed']}), {m['parameters']:,} parameters."
    if "fid" in m:
        text += (f" FID {m['fid']:.1f} ± {m['fid_std']:.1f} over {m['sample_sets']} sets of {m['n_generated']:,} "
                 f"samples, recall {m['recall']:.2f}, {m['classes_covered']} classes covered.")
    if "test_mse" in m:
        text += f" Test MSE {m['test_mse']:.4f} ({m['mse_ratio_to_pca']:.2f} × PCA's)."
    return text


def _measure(name, cfg, data, model, payload, net, x_train, y_train, x_test, y_test):
    """What the model can do, by what it is: (metrics, grids, arrays, timing: how long sampling takes). Sampling
    and metric time is charged to the clock's `sampling` and `metrics`; the rest (the models' own analyses,
    few-label runs, t-SNE) is `analysis`."""
    device = x_train.device
    grids: dict[str, torch.Tensor] = {}
    arrays: dict[str, list] = {}
    timing: dict = {}
    metrics: dict = {"model": name, "seed": cfg.seed, "family": payload["family"], "parameters": count_params(model)}
    full = cfg.evaluate.scope == "full"  # else only the numbers a tuning grid's choice reads
    if isinstance(model, Autoencoder):
        metrics.update(_charged("metrics", autoencoder_metrics, model, x_train, y_train, x_test, y_test, cfg.evaluate))
        for phase, mse in payload["extra"].get("phase_val_mse", {}).items():
            metrics[f"val_mse_after_{phase}"] = mse
    if isinstance(model, Autoencoder) and full:
        by_class = x_test[showcase(data.y_test, len(data.y_test)).to(device)]  # classes in turn, for pictures
        shown = by_class[: cfg.train.grid_size // 2]
        grids["reconstructions"] = interleave_rows(shown, model.reconstruct(shown))
        own = model.analyze(x_train, by_class, cfg.seed)
        metrics.update(own.metrics)
        grids.update(own.grids)
        arrays.update(own.arrays)
        model_cfg = spec(name).config.model_validate(payload["config"])
        if cfg.evaluate.few_labels:
            seed_everything(cfg.seed)
            fresh = build(name, model_cfg, data.shape).to(device)  # the from-scratch baseline
            metrics.update(few_label_accuracy(model, fresh, x_train, y_train, x_test, y_test, data.num_classes,
                                              cfg.evaluate, cfg.seed))
        if model_cfg.codings_map == "tsne":
            arrays.update(tsne_map(batched(model.encode, x_test), data.y_test, cfg.seed))
    if isinstance(model, Generative):
        with embeddings_reused():
            _generative(cfg, data, model, net, device, metrics, grids, arrays, timing)
    return metrics, grids, arrays, timing


def _generative(cfg, data, model, net, device, metrics, grids, arrays, timing) -> None:
    """A generative model's part of `_measure`, filling its dicts. The real splits are moved to the device once,
    so that each is embedded once (`embeddings_reused`)."""
    full = cfg.evaluate.scope == "full"
    real, beside = references(data)
    real, beside = real.to(device), {k: v.to(device) for k, v in beside.items()}
    if isinstance(model, GAN):
        metrics["parameters"] = count_params(model.generator)  # what samples; the discriminator is separate
        metrics["discriminator_parameters"] = count_params(model.discriminator)
    if isinstance(model, Diffusion):
        metrics["parameters"] = count_params(model.net)  # the EMA copy is the same network
    if isinstance(model, GAN) and full:
        metrics.update(_charged("metrics", latent_metrics, model, net, cfg.evaluate, data.num_classes, cfg.seed))
    if isinstance(model, (GAN, Diffusion)) and full:
        own = model.analyze(classifier(net), cfg.seed)
        metrics.update(own.metrics)
        grids.update(own.grids)
        arrays.update(own.arrays)
    if hasattr(model, "sample_mixed") and full:  # a style-based generator: styles from several latents
        metrics.update(_charged("metrics", mixing_fids, model, net, real, cfg))
    n = cfg.evaluate.n_generated * cfg.evaluate.sample_sets
    t0 = time.perf_counter()
    fake = _charged("sampling", draw, model, n, cfg.seed + 1)  # disjoint sets
    timing["sample_seconds_per_1000"] = round((time.perf_counter() - t0) * 1000 / n, 3)
    metrics.update(_charged("metrics", generative_metrics_sets, net, real, fake, cfg.evaluate, cfg.seed,
                            data.num_classes, beside))
    if full:
        metrics.update(_charged("metrics", memorization, net, fake, beside["train"], beside["val"]))
    if isinstance(model, Diffusion) and full:
        arrays.update(_charged("sampling", steps_sweep, model, net, beside["val"], cfg, data.num_classes))
        timing["sweep_seconds_per_1000"] = arrays.pop("sweep_seconds_per_1000")
    grids["samples"] = fake[: cfg.train.grid_size]


class _Steps:
    """A diffusion model's sampler at one setting, as the `sample(n, generator)` that `draw` calls."""

    def __init__(self, sample):
        self.sample = sample


def steps_sweep(model: Diffusion, net: EvaluatorNet, x_val: torch.Tensor, cfg: StudyConfig,
                num_classes: int) -> dict[str, list]:
    """FID, recall, classes covered and seconds per 1,000 samples against the number of sampling steps: DDIM at
    each count of the model's `steps_sweep`, deterministic (eta 0) and with the model's eta where that differs,
    then ancestral DDPM over all T steps, each on the model's `sweep_samples` images from the same seeded noise,
    against the validation split: the screen the sampler's settings are chosen from (FID at one sample count and
    another reference: comparable along the sweep, not with the table's)."""
    real, n, mcfg = RealSet(net, x_val), model.cfg.sweep_samples, model.cfg
    out: dict[str, list] = {k: [] for k in ("sweep_sampler", "sweep_eta", "sweep_steps", "sweep_fid", "sweep_recall",
                                            "sweep_classes", "sweep_seconds_per_1000")}
    settings = [("ddim", eta, s, lambda k, g, s=s, eta=eta: model.ddim(k, g, s, eta=eta))
                for eta in sorted({0.0, mcfg.eta}) for s in mcfg.steps_sweep]
    for sampler, eta, steps, sample in [*settings, ("ddpm", 1.0, model.T, model.ancestral)]:
        t0 = time.perf_counter()
        images = draw(_Steps(sample), n, cfg.seed + 5)
        seconds = time.perf_counter() - t0
        m = set_metrics(real, *embed(net, images), cfg.evaluate, cfg.seed, num_classes, with_kid=False)
        for key, value in (("sampler", sampler), ("eta", eta), ("steps", steps), ("fid", m["fid"]),
                           ("recall", m["recall"]), ("classes", m["classes_covered"]),
                           ("seconds_per_1000", round(seconds * 1000 / n, 3))):
            out[f"sweep_{key}"].append(value)
    return out


MIXED_LATENTS = (1, 2, 3, 4)  # the StyleGAN paper's Table 2


def mixing_fids(model, net: EvaluatorNet, real: torch.Tensor, cfg: StudyConfig) -> dict[str, float]:
    """FID of images styled by 1 to 4 latents switched at random crossover layers (`sample_mixed`, the StyleGAN
    paper's Table 2), each on `n_generated` images from one seeded draw against the test split: `fid_mixed_<k>`.
    Mixing regularization claims to keep the FID of mixed images close to that of plain ones."""
    reals = RealSet(net, real)
    out = {}
    for k in MIXED_LATENTS:
        images = draw(_Steps(lambda n, g, k=k: model.sample_mixed(n, k, g)), cfg.evaluate.n_generated, cfg.seed + 7)
        out[f"fid_mixed_{k}"] = fid(reals.gaussian, Gaussian(embed(net, images)[0]))
    return out


def _charged(kind: str, fn, *args):
    """fn(*args), its time charged to `kind` and taken out of the enclosing `analysis` phase."""
    t0 = time.perf_counter()
    out = fn(*args)
    seconds = time.perf_counter() - t0
    CLOCK.add(kind, seconds)
    CLOCK.add("analysis", -seconds)  # the enclosing phase adds its whole time when it ends
    return out
