"""Metrics, all computed in the evaluator's feature space or on its predicted labels.

- FID (Heusel et al. 2017) and KID (Binkowski et al. 2018, cubic polynomial kernel, unbiased MMD² over random
  subsets), computed from the evaluator's features. Each image goes through the evaluator once: the real
  features once per stage, each generated set's once (tests/test_metrics.py checks both against torchmetrics).
- Precision and recall: Kynkäänniemi et al. 2019, "Improved precision and recall metric for assessing
  generative models": each set's manifold is the union of balls reaching each point's k-th nearest neighbour
  in that set; precision = share of generated points inside the real manifold, recall = share of real points
  inside the generated manifold. As in the paper, both sets have the same size (the real set is subsampled,
  seeded), so that the k-NN radii mean the same in both.
- References: the reported metrics compare generated images with the test split (as many real images as generated
  ones, by default); FID against the train split (`fid_train`) and against the validation split (`fid_val`, what
  choices are judged on) is computed beside it.
- Spread: the final evaluation draws `sample_sets` disjoint sets of generated images and reports each metric's
  mean and standard deviation over them.
- Memorization: each generated image's distance to its nearest training image over its distance to its nearest
  validation image; the median of that ratio, in pixels and in the evaluator's features. A generator that draws
  fresh images from the data's distribution shows the ratio of real held-out images (the control, measured on
  the test split; below 1 because the train split is the larger set); one that copies training images sits well
  below it (a copy's ratio is 0). A generator that collapses onto typical digits moves closer to both splits
  alike, so it does not lower the ratio: the check tells copying from prototype-seeking.
- `Judge`: the same metrics on a fixed number of samples against the validation split, cheap enough to run during
  training (the curves; training never sees the test split).
- Class coverage: classes predicted for at least `min_share / K` of the samples (K classes), and the KL
  divergence of the predicted-class histogram from uniform (0 = perfectly balanced, log K = one class only).
- Autoencoders: reconstruction MSE per pixel on [0, 1] pixels, PCA of the same code size as a baseline,
  linear-probe accuracy of the codings (logistic regression fit on train codings, scored on test codings), and
  how many coding units vary at all over the test set (a ReLU coding unit can die).
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

from pipeline import StudyError
from pipeline.config import EvaluateConfig
from pipeline.data import Dataset
from pipeline.evaluate.evaluator import EvaluatorNet, check_range
from pipeline.models.base import Autoencoder, Generative
from pipeline.train.common import batched


_REUSED: dict | None = None  # (net, images) -> their embedding, inside `embeddings_reused`


@contextmanager
def embeddings_reused():
    """Inside it, `embed` computes the embedding of one tensor by one net once: an evaluation scores its generated
    images and the real splits in several metrics (FID against three splits, memorization). The tensors must not
    change in place meanwhile."""
    global _REUSED
    _REUSED = {}
    try:
        yield
    finally:
        _REUSED = None


@torch.no_grad()
def embed(net: EvaluatorNet, images: Tensor) -> tuple[Tensor, Tensor]:
    """Features (N, F) and predicted classes (N,) of images in [0, 1]."""
    key = (id(net), id(images))
    if _REUSED is not None and key in _REUSED and _REUSED[key][0] is images:
        return _REUSED[key][1]
    net.eval()
    feats = batched(net.features, check_range(images))
    preds = net.head(feats).argmax(1)
    if _REUSED is not None:
        _REUSED[key] = (images, (feats, preds))  # the tensor kept, so that its id is not reused
    return feats, preds


def classifier(net: EvaluatorNet):
    """The evaluator as a function: images in [0, 1] -> predicted classes."""
    return lambda images: embed(net, images)[1]


class Gaussian:
    """Mean and covariance of a feature set (float64): all FID needs of it."""

    def __init__(self, features: Tensor):
        f = features.double()
        self.mean = f.mean(0)
        centred = f - self.mean
        self.cov = centred.T @ centred / max(len(f) - 1, 1)


def fid(real: Gaussian, fake: Gaussian) -> float:
    """||mu_r - mu_g||² + Tr(S_r + S_g - 2 (S_r S_g)^½); the trace of the root is the sum of the square roots of
    the eigenvalues of S_r S_g (real and non-negative for two covariance matrices, up to rounding)."""
    root = torch.linalg.eigvals(real.cov @ fake.cov).real.clamp_min(0).sqrt().sum()
    return float((real.mean - fake.mean).square().sum() + real.cov.trace() + fake.cov.trace() - 2 * root)


KID_WHOLE = 4000  # images a side up to which KID's kernel matrices are computed whole (128 MB each in float64)


def kid(real: Tensor, fake: Tensor, subsets: int, subset_size: int, seed: int) -> tuple[float, float]:
    """Unbiased MMD² with the kernel k(x, y) = (x·y / d + 1)³, on `subsets` seeded random subsets of each set;
    mean and (population) standard deviation over the subsets."""
    if subset_size > min(len(real), len(fake)):
        raise StudyError(f"evaluate.kid_subset_size ({subset_size}) exceeds the image count "
                         f"({len(real)} real, {len(fake)} generated)")
    real, fake = real.double(), fake.double()
    gen, d, m = torch.Generator().manual_seed(seed), real.shape[1], subset_size
    kernel = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    # up to KID_WHOLE images a side, every pair's kernel once and each subset's as blocks of it (the subsets' own
    # products would compute each pair about subsets x m / n times); above it, each subset's own (memory)
    whole = max(len(real), len(fake)) <= KID_WHOLE
    if whole:
        rr, ff, rf = kernel(real, real), kernel(fake, fake), kernel(real, fake)
    scores = []
    for _ in range(subsets):
        i = torch.randperm(len(real), generator=gen)[:m].to(real.device)
        j = torch.randperm(len(fake), generator=gen)[:m].to(fake.device)
        if whole:
            kxx, kyy, kxy = rr[i][:, i], ff[j][:, j], rf[i][:, j]
        else:
            kxx, kyy, kxy = kernel(real[i], real[i]), kernel(fake[j], fake[j]), kernel(real[i], fake[j])
        off = lambda k: (k.sum() - k.diagonal().sum()) / (m * (m - 1))  # noqa: E731
        scores.append(off(kxx) + off(kyy) - 2 * kxy.mean())
    scores = torch.stack(scores)
    return float(scores.mean()), float(scores.std(unbiased=False))


def _kth_radius(points: Tensor, k: int) -> Tensor:
    d = torch.cdist(points, points)  # (N, N)
    return d.kthvalue(k + 1, dim=1).values  # k+1: the point itself is at distance 0


def precision_recall(real: Tensor, fake: Tensor, k: int) -> tuple[float, float]:
    real, fake = real.double(), fake.double()
    r_real, r_fake = _kth_radius(real, k), _kth_radius(fake, k)
    d = torch.cdist(fake, real)  # (n_fake, n_real)
    precision = (d <= r_real[None, :]).any(dim=1).double().mean()
    recall = (d.T <= r_fake[None, :]).any(dim=1).double().mean()
    return float(precision), float(recall)


def class_coverage(preds: Tensor, num_classes: int, min_share: float) -> dict[str, float | list[int]]:
    counts = torch.bincount(preds.cpu(), minlength=num_classes)
    p = counts.double() / counts.sum()
    kl = float((p[p > 0] * (p[p > 0] * num_classes).log()).sum())
    return {"classes_covered": int((p >= min_share / num_classes).sum()), "class_kl": kl,
            "class_counts": counts.tolist()}


def draw(model: Generative, n: int, seed: int, chunk: int = 500) -> Tensor:
    """n samples in [0, 1], drawn in chunks from one seeded generator (the same images on every run). The global
    RNG (noise a model draws itself, StyleGAN's noise inputs) is seeded too, in a fork: a caller's random stream
    (a training run's) is left as it was."""
    gen = torch.Generator().manual_seed(seed)
    was_training = isinstance(model, torch.nn.Module) and model.training
    if isinstance(model, torch.nn.Module):
        model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = torch.cat([model.sample(min(chunk, n - i), gen) for i in range(0, n, chunk)])
    if was_training:
        model.train()
    return out


def subsample(n: int, k: int, seed: int) -> Tensor:
    """k of n indices, seeded, in increasing order (all of them when k >= n)."""
    if k >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


def _finite(out: dict) -> dict:
    for k, v in out.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise StudyError(f"metric {k} is not finite ({v}): the samples are degenerate (NaN or constant?)")
    return out


class RealSet:
    """The real side of every comparison, embedded once: all features (FID, KID) and their Gaussian."""

    def __init__(self, net: EvaluatorNet, real: Tensor):
        self.features, _ = embed(net, real)
        self.gaussian = Gaussian(self.features)

    def __len__(self) -> int:
        return len(self.features)


def set_metrics(real: RealSet, fake_f: Tensor, fake_pred: Tensor, cfg: EvaluateConfig, seed: int, num_classes: int,
                with_kid: bool = True) -> dict:
    """One generated set (its features and predicted classes) against the real set: FID (and KID) against every
    real image, precision/recall against as many real images as generated ones (a seeded subset)."""
    same = real.features[subsample(len(real), len(fake_f), seed).to(real.features.device)]
    precision, recall = precision_recall(same, fake_f, cfg.knn_k)
    out = {"fid": fid(real.gaussian, Gaussian(fake_f)), "precision": precision, "recall": recall,
           **class_coverage(fake_pred, num_classes, cfg.coverage_min_share),
           "n_real": len(real), "n_real_pr": len(same), "n_generated": len(fake_f)}
    if with_kid:
        out["kid_mean"], out["kid_std"] = kid(real.features, fake_f, cfg.kid_subsets, cfg.kid_subset_size, seed)
    return _finite(out)


def generative_metrics(net: EvaluatorNet, real: Tensor, fake: Tensor, cfg: EvaluateConfig, seed: int,
                       num_classes: int) -> dict:
    """FID/KID against every real image; precision/recall against as many real images as generated ones."""
    fake_f, fake_pred = embed(net, fake)
    return set_metrics(RealSet(net, real), fake_f, fake_pred, cfg, seed, num_classes)


SPREAD = ("fid", "kid_mean", "precision", "recall", "class_kl")


def generative_metrics_sets(net: EvaluatorNet, real: Tensor, fake: Tensor, cfg: EvaluateConfig, seed: int,
                            num_classes: int, beside: dict[str, Tensor] | None = None) -> dict:
    """`set_metrics` on each of the disjoint sets of `cfg.n_generated` images in `fake` against `real`: the mean of
    each metric, its standard deviation over the sets (`<metric>_std`) and the per-set values (`<metric>_sets`).
    Classes covered are counted over all sets together. Each of `beside` (a name -> real images) adds FID
    against those images as `fid_<name>`, with the same spread."""
    reals = RealSet(net, real)
    others = {name: RealSet(net, images) for name, images in (beside or {}).items()}
    fake_f, fake_pred = embed(net, fake)
    sets = []
    for i, (f, p) in enumerate(zip(fake_f.split(cfg.n_generated), fake_pred.split(cfg.n_generated))):
        one = set_metrics(reals, f, p, cfg, seed + i, num_classes)
        fake_gaussian = Gaussian(f)
        one.update({f"fid_{name}": fid(other.gaussian, fake_gaussian) for name, other in others.items()})
        sets.append(_finite(one))
    out = dict(sets[0])
    for k in (*SPREAD, *(f"fid_{name}" for name in others)):
        values = torch.tensor([m[k] for m in sets], dtype=torch.float64)
        out[k], out[f"{k}_sets"] = float(values.mean()), [round(float(v), 6) for v in values]
        out[f"{k}_std"] = float(values.std(unbiased=True)) if len(sets) > 1 else 0.0
    out["kid_subset_std"] = float(torch.tensor([m["kid_std"] for m in sets]).mean())
    del out["kid_std"]
    out.update(class_coverage(fake_pred, num_classes, cfg.coverage_min_share), sample_sets=len(sets),
               n_generated=len(fake) // len(sets))
    return out


def references(data: Dataset) -> tuple[Tensor, dict[str, Tensor]]:
    """The real images a generator is scored against: the test split (the reported metrics), and beside it the
    train and validation splits (FID only)."""
    return data.x_test, {"train": data.x_train, "val": data.x_val}


def memorization(net: EvaluatorNet, images: Tensor, train: Tensor, val: Tensor) -> dict[str, float]:
    """Median over `images` of (distance to the nearest image of `train`) / (distance to the nearest image of
    `val`), in pixels (`memorization`) and in the evaluator's features (`memorization_features`), with the median
    pixel distance to the nearest training image (`nearest_train_pixels`). The whole train split, not a subset as
    large as `val`: a copy of a training image left out of such a subset would go unseen (with 500 of 3,500, six
    copies in seven). The larger set sits closer to any image, so the ratio is read against the same ratio of real
    held-out images (the control), not against 1."""
    out = {}
    for key, space in (("memorization", lambda x: x.flatten(1).double()),
                       ("memorization_features", lambda x: embed(net, x)[0].double())):
        points, near_train, near_val = space(images), space(train), space(val)
        to_train = torch.cat([torch.cdist(c, near_train).min(1).values for c in points.split(1000)])
        to_val = torch.cat([torch.cdist(c, near_val).min(1).values for c in points.split(1000)])
        out[key] = float((to_train / to_val.clamp_min(1e-12)).median())
        if key == "memorization":
            out["nearest_train_pixels"] = float(to_train.median())
    return _finite(out)


def real_floor(net: EvaluatorNet, data: Dataset, cfg: EvaluateConfig, seed: int) -> dict:
    """The floor of every generator's metrics: a seeded subset of `n_generated` train images scored exactly as a
    generator's set is (against the test split, FID against train and validation beside). Its memorization is 0
    by construction (the images are training images: a perfect copier); `memorization_control` is the same ratio
    for the test images themselves, what a generator that does not copy should show."""
    real, beside = references(data)
    copies = data.x_train[subsample(len(data.x_train), cfg.n_generated, seed + 1)]
    one = cfg.model_copy(update={"n_generated": len(copies)})
    with embeddings_reused():
        out = generative_metrics_sets(net, real, copies, one, seed, data.num_classes, beside)
        out = {k: v for k, v in out.items() if not k.endswith(("_sets", "_std")) and k != "sample_sets"}
        out.update(memorization(net, copies, data.x_train, data.x_val))
        control = memorization(net, data.x_test, data.x_train, data.x_val)
    out["memorization_control"] = control["memorization"]
    out["memorization_features_control"] = control["memorization_features"]
    return out


def judge_for(net: EvaluatorNet, data: Dataset, cfg: EvaluateConfig, seed: int, device) -> "Judge":
    return Judge(net.to(device), data.x_val.to(device), cfg, data.num_classes, seed)


class Judge:
    """Scores a generator during training, at each curve point: FID against every real image of the split it is
    given (the validation split: training never sees the test split), precision and
    recall against an equal-size seeded subset, and class coverage, all on the same `curve_samples` images drawn
    from fixed latents (the same images at every point, so the curve moves only because the model does)."""

    def __init__(self, net: EvaluatorNet, real: Tensor, cfg: EvaluateConfig, num_classes: int, seed: int):
        self.net, self.cfg, self.num_classes, self.seed = net.eval(), cfg, num_classes, seed
        self.n = cfg.curve_samples
        self.real = RealSet(net, real)

    @torch.no_grad()
    def score(self, model: Generative) -> dict[str, float]:
        fake_f, preds = embed(self.net, draw(model, self.n, self.seed + 3))
        out = set_metrics(self.real, fake_f, preds, self.cfg, self.seed, self.num_classes, with_kid=False) \
            if bool(torch.isfinite(fake_f).all()) else {"fid": None, "precision": 0.0, "recall": 0.0,
                                                        **class_coverage(preds, self.num_classes,
                                                                         self.cfg.coverage_min_share)}
        return {k: out[k] for k in ("fid", "precision", "recall", "classes_covered", "class_kl")}


def pca_mse(x_train: Tensor, x_test: Tensor, code_size: int) -> float:
    """Test MSE of scikit-learn's PCA, reconstructions clipped to [0, 1] like every model's."""
    from sklearn.decomposition import PCA

    train = x_train.flatten(1).double().cpu().numpy()
    test = x_test.flatten(1).double().cpu().numpy()
    pca = PCA(n_components=code_size, svd_solver="full").fit(train)
    return float(np.mean((np.clip(pca.inverse_transform(pca.transform(test)), 0, 1) - test) ** 2))


def linear_probe(train_codes: Tensor, y_train: Tensor, test_codes: Tensor, y_test: Tensor, max_iter: int) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter bounds the time; the score is what counts
        probe.fit(train_codes.double().cpu().numpy(), y_train.cpu().numpy())
    return float(probe.score(test_codes.double().cpu().numpy(), y_test.cpu().numpy()))


@torch.no_grad()
def autoencoder_metrics(model: Autoencoder, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor,
                        cfg: EvaluateConfig) -> dict[str, float]:
    model.eval()
    test_mse = float(((batched(model.reconstruct, x_test) - x_test) ** 2).mean())
    train_mse = float(((batched(model.reconstruct, x_train) - x_train) ** 2).mean())
    baseline = pca_mse(x_train, x_test, model.code_size)
    test_codes = batched(model.encode, x_test)
    probe = linear_probe(batched(model.encode, x_train), y_train, test_codes, y_test, cfg.probe_max_iter)
    return {"test_mse": test_mse, "train_mse": train_mse, "pca_test_mse": baseline,
            "mse_ratio_to_pca": test_mse / baseline, "probe_accuracy": probe, "code_size": model.code_size,
            "active_codes": int((test_codes.std(0) > 1e-6).sum())}  # coding units that vary (ReLU ones can die)


def tsne_map(codes: Tensor, labels: Tensor, seed: int) -> dict[str, list]:
    """A 2-D t-SNE embedding of codings (van der Maaten & Hinton 2008), for a map coloured by class."""
    from sklearn.manifold import TSNE

    xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=30).fit_transform(codes.double().cpu().numpy())
    return {"tsne_x": [round(float(v), 4) for v in xy[:, 0]], "tsne_y": [round(float(v), 4) for v in xy[:, 1]],
            "tsne_label": [int(v) for v in labels.cpu()]}
