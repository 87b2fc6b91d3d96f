"""Sparse autoencoder: an overcomplete sigmoid coding layer pushed to fire rarely.

Lecture 02, "Sparsity Autoencoder": about 5 % of the coding units active, a sigmoid coding layer, and a
penalty added to the reconstruction loss, either
- `l1`: lambda * sum_i |a_i|, the L1 norm of each image's codings (averaged over the batch), or
- `kl`: beta * sum_j KL(rho || rho_hat_j), rho the target activation, rho_hat_j unit j's mean activation over
  the batch, KL(p || q) = p log(p/q) + (1 - p) log((1 - p)/(1 - q)).
Hands-On ML 3rd ed. ch. 17: 784-100-300(sigmoid)-100-784. `analyze` reports the mean activation against
the target, how many units fire per image, dead units, and each unit's mean activation (for a histogram).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from .base import Analysis, Autoencoder, ImageShape, Width, mlp, reconstruction_loss
from .stacked import StackedConfig


class SparseConfig(StackedConfig):
    code_size: Width = 300  # overcomplete
    penalty: Literal["l1", "kl"] = "kl"
    weight: float = Field(0.1, ge=0)  # lambda for l1, beta for kl
    target: float = Field(0.05, gt=0, lt=1)  # rho: the mean activation aimed for


class L1SparseConfig(SparseConfig):
    penalty: Literal["l1", "kl"] = "l1"
    weight: float = Field(1e-3, ge=0)


class KLSparseConfig(SparseConfig):
    penalty: Literal["l1", "kl"] = "kl"
    weight: float = Field(0.1, ge=0)


def kl_divergence(p: float | Tensor, q: Tensor) -> Tensor:
    """KL(p || q) between Bernoulli distributions, elementwise."""
    q = q.clamp(1e-6, 1 - 1e-6)
    return p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))


class Sparse(Autoencoder):
    def __init__(self, cfg: SparseConfig, shape: ImageShape):
        super().__init__()
        self.cfg, self.shape, self.code_size = cfg, shape, cfg.code_size
        d = int(np.prod(shape))
        self.encoder = nn.Sequential(mlp([d, *cfg.hidden], cfg.activation, last_act=True),
                                     nn.Linear([d, *cfg.hidden][-1], cfg.code_size), nn.Sigmoid())  # codings in (0, 1)
        self.decoder = mlp([cfg.code_size, *cfg.hidden[::-1], d], cfg.activation, last_act=False)
        self.out = nn.Sigmoid() if cfg.output == "sigmoid" else nn.Identity()

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x.flatten(1))  # (B, code)

    def decode(self, z: Tensor) -> Tensor:
        return self.out(self.decoder(z)).unflatten(1, self.shape)

    def penalty(self, a: Tensor) -> Tensor:
        if self.cfg.penalty == "l1":
            return a.abs().sum(1).mean()
        return kl_divergence(self.cfg.target, a.mean(0)).sum()

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        a = self.encode(x)
        rec = reconstruction_loss(self.cfg.loss, self.decode(a), x)
        sparsity = self.penalty(a)
        return {"loss": rec + self.cfg.weight * sparsity, "reconstruction": rec, "sparsity": sparsity,
                "mean_activation": a.mean()}

    @torch.no_grad()
    def analyze(self, x_train: Tensor, x_test: Tensor, seed: int) -> Analysis:
        a = torch.cat([self.encode(chunk) for chunk in x_test.split(500)])  # (N, code)
        per_unit = a.mean(0)
        mean = float(a.mean())
        return Analysis(
            metrics={"mean_activation": mean, "target_activation": self.cfg.target,
                     "activation_ratio_to_target": mean / self.cfg.target,
                     "units_firing_per_image": float((a > 0.5).float().mean()),  # share of units above 0.5
                     "dead_units": float((per_unit < 1e-3).float().mean())},
            arrays={"unit_mean_activation": [round(float(v), 6) for v in per_unit]},
        )
