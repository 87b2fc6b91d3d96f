"""Latent-space experiments on a trained generator, judged by the study's evaluator.

The digits analogue of DCGAN's "man with glasses - man + woman = woman with glasses" (Radford et al. 2016):
an attribute vector is the mean latent of generated samples that have the attribute minus the mean latent of
those that lack it. For digits the attribute is ink mass (thick strokes minus thin strokes: the top and bottom
quarters of the mean pixel value); adding it to other latents should thicken their strokes without changing
the digit. Interpolating between class-mean latents (the mean latent of the samples the evaluator assigns to a
class) walks from one digit to another.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .base import GAN, Analysis

Classify = Callable[[Tensor], Tensor]  # images in [0, 1] -> predicted classes


@torch.no_grad()
def _decode(model: GAN, z: Tensor) -> Tensor:
    return torch.cat([model(chunk) for chunk in z.split(500)]).clamp(0, 1)


@torch.no_grad()
def latent_arithmetic(model: GAN, classify: Classify, seed: int, n: int = 2000) -> Analysis:
    model.eval()
    z = model.latent(n, torch.Generator().manual_seed(seed))
    x = _decode(model, z)
    labels, ink = classify(x), x.flatten(1).mean(1)
    lo, hi = torch.quantile(ink, 0.25), torch.quantile(ink, 0.75)
    thick = z[ink >= hi].mean(0) - z[ink <= lo].mean(0)  # the attribute vector, (latent,)

    others = z[:500]
    moved = _decode(model, others + thick)
    kept = float((classify(moved) == labels[:500]).float().mean())
    ink_gain = float(moved.flatten(1).mean(1).mean() - ink[:500].mean())

    firsts = [int(torch.nonzero(labels == k)[0]) for k in range(10) if (labels == k).any()][:8]
    base = z[firsts]  # one latent per class seen
    steps = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])
    walk = base[:, None, :] + steps[None, :, None] * thick  # (rows, 5, latent)
    arithmetic = _decode(model, walk.flatten(0, 1)).unflatten(0, walk.shape[:2])

    classes = [k for k in range(10) if int((labels == k).sum()) >= 10]
    means = torch.stack([z[labels == k].mean(0) for k in classes])  # (K, latent)
    recognised = float((classify(_decode(model, means)) == torch.tensor(classes, device=labels.device)).float().mean())
    grids = {"ink_arithmetic": arithmetic}
    if len(classes) > 1:  # a generator whose samples fall in one class has nothing to interpolate between
        t = torch.linspace(0, 1, 9)[None, :, None]
        line = means[:-1, None] * (1 - t) + means[1:, None] * t  # consecutive classes
        grids["class_interpolation"] = _decode(model, line.flatten(0, 1)).unflatten(0, line.shape[:2])
    return Analysis(
        metrics={"ink_vector_ink_gain": ink_gain, "ink_vector_class_kept": kept,
                 "class_mean_latents_recognised": recognised},
        grids=grids,
    )
