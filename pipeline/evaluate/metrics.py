"""Metrics, all computed in the evaluator's feature space or on its predicted labels.

- FID and KID: torchmetrics, with the evaluator as a custom feature extractor (`Features`).
- Precision and recall: Kynkäänniemi et al. 2019, "Improved precision and recall metric for assessing
  generative models": each set's manifold is the union of balls reaching each point's k-th nearest neighbour
  in that set; precision = share of generated points inside the real manifold, recall = share of real points
  inside the generated manifold.
- Class coverage: classes predicted for at least `min_share / K` of the samples (K classes), and the KL
  divergence of the predicted-class histogram from uniform (0 = perfectly balanced, log K = one class only).
- Autoencoders: reconstruction MSE per pixel on [0, 1] pixels, PCA of the same code size as a baseline,
  linear-probe accuracy of the codings (logistic regression fit on train codings, scored on test codings), and
  how many coding units vary at all over the test set (a ReLU coding unit can die).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from pipeline import StudyError
from pipeline.config import EvaluateConfig
from pipeline.evaluate.evaluator import EvaluatorNet, Features
from pipeline.models.base import Autoencoder
from pipeline.train.common import batched


@torch.no_grad()
def embed(net: EvaluatorNet, images: Tensor) -> tuple[Tensor, Tensor]:
    """Features (N, F) and predicted classes (N,) of images in [0, 1]."""
    net.eval()
    feats = batched(net.features, images)
    preds = net.head(feats).argmax(1)
    return feats, preds


def classifier(net: EvaluatorNet):
    """The evaluator as a function: images in [0, 1] -> predicted classes."""
    return lambda images: embed(net, images)[1]


def fid_kid(net: EvaluatorNet, real: Tensor, fake: Tensor, cfg: EvaluateConfig, seed: int) -> dict[str, float]:
    subset = cfg.kid_subset_size
    if subset > min(len(real), len(fake)):
        raise StudyError(f"evaluate.kid_subset_size ({subset}) exceeds the image count "
                         f"({len(real)} real, {len(fake)} generated)")
    features = Features(net)
    warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
    fid = FrechetInceptionDistance(feature=features, normalize=True).to(real.device)
    kid = KernelInceptionDistance(feature=features, subsets=cfg.kid_subsets, subset_size=subset,
                                  normalize=True).to(real.device)
    with torch.no_grad():
        for metric in (fid, kid):
            for chunk in real.split(500):
                metric.update(chunk, real=True)
            for chunk in fake.split(500):
                metric.update(chunk, real=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # KID draws random subsets
            kid_mean, kid_std = kid.compute()
        return {"fid": float(fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std)}


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


def generative_metrics(net: EvaluatorNet, real: Tensor, fake: Tensor, cfg: EvaluateConfig, seed: int) -> dict:
    real_f, _ = embed(net, real)
    fake_f, fake_pred = embed(net, fake)
    precision, recall = precision_recall(real_f, fake_f, cfg.knn_k)
    out = {**fid_kid(net, real, fake, cfg, seed), "precision": precision, "recall": recall,
           **class_coverage(fake_pred, net.head[-1].out_features, cfg.coverage_min_share),
           "n_real": len(real), "n_generated": len(fake)}
    for k, v in out.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise StudyError(f"metric {k} is not finite ({v}): the samples are degenerate (NaN or constant?)")
    return out


def pca_mse(x_train: Tensor, x_test: Tensor, code_size: int) -> float:
    """Test MSE of scikit-learn's PCA, reconstructions clipped to [0, 1] like every model's."""
    train = x_train.flatten(1).double().cpu().numpy()
    test = x_test.flatten(1).double().cpu().numpy()
    pca = PCA(n_components=code_size, svd_solver="full").fit(train)
    return float(np.mean((np.clip(pca.inverse_transform(pca.transform(test)), 0, 1) - test) ** 2))


def linear_probe(train_codes: Tensor, y_train: Tensor, test_codes: Tensor, y_test: Tensor, max_iter: int) -> float:
    from sklearn.exceptions import ConvergenceWarning

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
