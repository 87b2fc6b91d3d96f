"""Z against W, measured as the StyleGAN paper measures it (Karras et al. 2019, section 4 and appendix C), for every
latent space a GAN exposes (`GAN.latent_spaces`: z for every GAN, StyleGAN's w too).

- Perceptual path length: pairs of latents, a point at t along the path between them and one at t + eps
  (eps = `evaluate.ppl_epsilon`, 1e-4 in the paper); the path length is the mean of d(image(t), image(t + eps)) /
  eps² over `evaluate.ppl_pairs` pairs, after dropping the values below the 1st and above the 99th percentile
  (the paper's trimming). "full" sampling draws t uniformly in [0, 1]; "end" sampling puts t at the path's end
  (t = 0, as the paper's code). Slerp in z (a Gaussian input), lerp in w (a learned latent). The generator's
  noise inputs are the same for both images of a pair. The distance d is the squared Euclidean distance in the
  evaluator's feature space (the paper's LPIPS needs VGG weights, which this study cannot fetch). Everything runs
  in float64, so that a difference of order eps is not rounding. A short path means a smooth mapping, or a
  generator that draws few distinct images: read it beside FID, recall and classes covered.
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

import copy
import math

import numpy as np
import torch
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
def path_length(space: LatentSpace, features, pairs: int, eps: float, sampling: str, seed: int,
                chunk: int = 250) -> float:
    """The trimmed mean of d(image(t), image(t + eps)) / eps² over `pairs` pairs (module doc); `features` maps
    images in [0, 1] to the evaluator's features, in float64 like the space's images."""
    g, tg = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)  # the same pairs either way
    interpolate = slerp if space.interpolation == "slerp" else lerp
    lengths = []
    for i, start in enumerate(range(0, pairs, chunk)):
        n = min(chunk, pairs - start)
        a, b = space.draw(n, g).double(), space.draw(n, g).double()
        t = torch.rand(n, generator=tg, dtype=torch.float64) if sampling == "full" else torch.zeros(n, dtype=torch.float64)
        t = t.to(a.device)
        ends = [_with_noise(seed + i, space.images, interpolate(a, b, u)) for u in (t, t + eps)]
        lengths.append(((features(ends[0]) - features(ends[1])) ** 2).sum(1) / eps ** 2)
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
    wide = copy.deepcopy(model).double()  # a difference of order eps must not be rounding
    wide_net = copy.deepcopy(net).double().eval()
    features = wide_net.features
    out: dict[str, float] = {}
    for name, space in wide.latent_spaces().items():
        for sampling in ("full", "end"):
            out[f"ppl_{name}_{sampling}"] = path_length(space, features, cfg.ppl_pairs, cfg.ppl_epsilon, sampling,
                                                        seed)
    for name, space in model.latent_spaces().items():
        out[f"separability_{name}"] = separability(space, net, cfg.separability_samples, num_classes, seed)
    return out
