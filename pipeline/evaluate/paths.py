"""Z against W, measured as the StyleGAN paper measures it (Karras et al. 2019, section 4 and appendix C), for every
latent space a GAN exposes (`GAN.latent_spaces`: z for every GAN, StyleGAN's w too).

- Perceptual path length: pairs of latents and a point at t along the path between them; the path length is the
  mean of |d/dt f(image(t))|² over `evaluate.ppl_pairs` pairs, after dropping the values below the 1st and above
  the 99th percentile (the paper's trimming). The paper takes d(image(t), image(t + eps)) / eps² with eps = 1e-4,
  a difference quotient of this derivative; here the derivative itself is computed, by forward-mode automatic
  differentiation along t, in float32: the eps -> 0 limit, with no difference of two nearly equal images to
  round (in float32 that difference loses a few per cent; in float64 it costs three times as much). "full"
  sampling draws t uniformly in [0, 1]; "end" sampling puts t at the path's end (t = 0, as the paper's code).
  Slerp in z (a Gaussian input), lerp in w (a learned latent). The generator's noise inputs are drawn once per
  pair (they do not move along the path). f is the evaluator's feature map and |.|² the squared Euclidean norm
  (the paper's LPIPS needs VGG weights, which this study cannot fetch). A short path means a smooth mapping, or
  a generator that draws few distinct images: read it beside FID, recall and classes covered.
- Linear separability: `evaluate.separability_samples` latents, their images labelled by the evaluator; the
  more confident half kept (the paper's rule). For each class, a linear SVM on the latent predicts "this class or
  not"; the conditional entropy H(Y | X) of the evaluator's label Y given the SVM's side X says how much of the
  class a hyperplane leaves unexplained; separability = exp(sum over classes of H(Y | X)) (the paper's
  definition over its 40 attributes). Lower is more linear; 1 is perfectly separable.

Slerp in z follows the paper's code on directions (unit vectors); the result is scaled to the interpolated norm
of the two ends, so that a generator without StyleGAN's input normalisation (DCGAN, ProGAN's pixel norm aside)
sees inputs of the norm it was trained on.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.autograd.forward_ad as fwad
from torch import Tensor

from pipeline.config import EvaluateConfig
from pipeline.evaluate.evaluator import EvaluatorNet
from pipeline.models.base import GAN, LatentSpace

TRIM = (1.0, 99.0)  # percentiles of the path lengths kept (the paper's)


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation of the directions of a and b (rows) at t (N,), scaled to the lerp of their norms."""
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    ua, ub = a / na, b / nb
    cos = (ua * ub).sum(1, keepdim=True).clamp(-1, 1)
    angle = t[:, None] * torch.acos(cos)
    ortho = ub - cos * ua
    ortho = ortho / ortho.norm(dim=1, keepdim=True).clamp_min(1e-30)
    direction = ua * torch.cos(angle) + ortho * torch.sin(angle)
    return direction * (na + t[:, None] * (nb - na))


def lerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    return a + t[:, None] * (b - a)


def _with_noise(seed: int, fn, x: Tensor) -> Tensor:
    """fn(x) with the global random stream (the generator's noise inputs) set by `seed`, the caller's left as was."""
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        return fn(x)


@torch.no_grad()
def path_length(space: LatentSpace, features, pairs: int, sampling: str, seed: int, chunk: int = 250) -> float:
    """The trimmed mean of |d/dt features(image(t))|² over `pairs` pairs (module doc); `features` maps images in
    [0, 1] to the evaluator's features."""
    g, tg = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)  # the same pairs either way
    interpolate = slerp if space.interpolation == "slerp" else lerp
    lengths = []
    for i, start in enumerate(range(0, pairs, chunk)):
        n = min(chunk, pairs - start)
        a, b = space.draw(n, g), space.draw(n, g)
        t = torch.rand(n, generator=tg, dtype=a.dtype) if sampling == "full" else torch.zeros(n, dtype=a.dtype)
        t = t.to(a.device)
        with fwad.dual_level():
            along = interpolate(a, b, fwad.make_dual(t, torch.ones_like(t)))  # the point and its velocity in t
            speed = fwad.unpack_dual(features(_with_noise(seed + i, space.images, along))).tangent
        lengths.append((speed.double() ** 2).sum(1))
    values = torch.cat(lengths).cpu().numpy()
    low, high = np.percentile(values, TRIM[0], method="lower"), np.percentile(values, TRIM[1], method="higher")
    return float(values[(values >= low) & (values <= high)].mean())


def _conditional_entropy(y: np.ndarray, x: np.ndarray) -> float:
    """H(Y | X) in nats of two binary arrays."""
    h = 0.0
    for side in (False, True):
        on = x == side
        if not on.any():
            continue
        p = y[on].mean()
        h += on.mean() * -sum(q * math.log(q) for q in (p, 1 - p) if q > 0)
    return h


@torch.no_grad()
def separability(space: LatentSpace, net: EvaluatorNet, samples: int, num_classes: int, seed: int) -> float:
    """exp(sum over classes of H(label is the class | the side of a linear SVM on the latent)) (module doc)."""
    from sklearn.svm import LinearSVC  # seconds to import: only here

    g = torch.Generator().manual_seed(seed)
    latents = torch.cat([space.draw(min(500, samples - i), g) for i in range(0, samples, 500)])
    images = torch.cat([_with_noise(seed + i, space.images, chunk) for i, chunk in enumerate(latents.split(500))])
    net.eval()
    probs = torch.cat([net.head(net.features(c)).softmax(1) for c in images.float().split(500)])
    confidence, labels = probs.max(1)
    keep = confidence.argsort(descending=True)[: samples // 2].sort().values  # the more confident half
    x = latents[keep].double().cpu().numpy()
    y = labels[keep].cpu().numpy()
    total = 0.0
    for c in range(num_classes):
        target = y == c
        if target.all() or not target.any():  # one side only: the label is known without the latent
            continue
        side = LinearSVC(C=1.0, max_iter=20_000, random_state=seed).fit(x, target).predict(x).astype(bool)
        total += _conditional_entropy(target, side)
    return float(math.exp(total))


def latent_metrics(model: GAN, net: EvaluatorNet, cfg: EvaluateConfig, num_classes: int, seed: int) -> dict[str, float]:
    """`ppl_<space>_full`, `ppl_<space>_end` and `separability_<space>` for each of the model's latent spaces."""
    model.eval()
    net.eval()
    out: dict[str, float] = {}
    for name, space in model.latent_spaces().items():
        for sampling in ("full", "end"):
            out[f"ppl_{name}_{sampling}"] = path_length(space, net.features, cfg.ppl_pairs, sampling, seed)
    for name, space in model.latent_spaces().items():
        out[f"separability_{name}"] = separability(space, net, cfg.separability_samples, num_classes, seed)
    return out
