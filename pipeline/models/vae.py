"""Variational autoencoder (Kingma & Welling 2014), coding size 10.

Lecture 02, "Variational autoencoder (VAE)"; Hands-On ML 3rd ed. ch. 17 (784-150-100-10 and back, Nadam).
The encoder gives the mean coding mu and log sigma^2; a coding is z = mu + sigma * eps with eps ~ N(0, I)
(the reparameterization trick: the noise is scaled by the standard deviation, not the variance). The loss is the negative ELBO:
reconstruction (summed over pixels) + beta * KL(q(z|x) || N(0, I)), the KL in closed form
1/2 * sum(sigma^2 + mu^2 - log sigma^2 - 1). Both terms are logged separately.

As a generative model it samples z ~ N(0, I) and decodes it; `analyze` adds semantic interpolation: a walk
along each latent axis (the others at 0) and straight lines between the mean codings of two test images.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from .base import Analysis, Autoencoder, BudgetedTraining, Generative, Hidden, ImageShape, Width, mlp


class VAEConfig(BudgetedTraining):
    hidden: Hidden = Field(default_factory=lambda: [150, 100])
    code_size: Width = 10
    activation: Literal["relu", "selu", "elu", "tanh"] = "relu"
    reconstruction: Literal["mse", "bce"] = "mse"
    beta: float = Field(1.0, ge=0)


class VAE(Autoencoder, Generative):
    def __init__(self, cfg: VAEConfig, shape: ImageShape):
        super().__init__()
        self.cfg, self.shape, self.code_size = cfg, shape, cfg.code_size
        d = int(np.prod(shape))
        self.encoder = mlp([d, *cfg.hidden], cfg.activation, last_act=True)
        self.mu = nn.Linear([d, *cfg.hidden][-1], cfg.code_size)
        self.log_var = nn.Linear([d, *cfg.hidden][-1], cfg.code_size)
        self.decoder = nn.Sequential(mlp([cfg.code_size, *cfg.hidden[::-1], d], cfg.activation, False), nn.Sigmoid())

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encoder(x.flatten(1))  # (B, hidden[-1])
        return self.mu(h), self.log_var(h)  # (B, code) each

    def encode(self, x: Tensor) -> Tensor:
        return self.posterior(x)[0]  # the mean coding: deterministic, used for probes and reconstructions

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z).unflatten(1, self.shape)

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        mu, log_var = self.posterior(x)
        z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)  # reparameterization
        x_hat = self.decode(z)
        if self.cfg.reconstruction == "bce":
            rec = F.binary_cross_entropy(x_hat.clamp(1e-7, 1 - 1e-7), x, reduction="none")
        else:
            rec = (x_hat - x) ** 2
        rec = rec.flatten(1).sum(1).mean()  # per image
        kl = 0.5 * (log_var.exp() + mu**2 - log_var - 1).sum(1).mean()  # per image
        return {"loss": rec + self.cfg.beta * kl, "reconstruction": rec, "kl": kl}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        device = self.mu.weight.device
        z = torch.randn(n, self.code_size, generator=generator).to(device)  # z ~ N(0, I)
        return self.decode(z).clamp(0, 1)

    @torch.no_grad()
    def analyze(self, x_train: Tensor, x_test: Tensor, seed: int) -> Analysis:
        device = self.mu.weight.device
        steps = torch.linspace(-3, 3, 9, device=device)
        axes = torch.zeros(self.code_size, 9, self.code_size, device=device)  # (axis, step, code)
        for i in range(self.code_size):
            axes[i, :, i] = steps
        traversal = self.decode(axes.flatten(0, 1)).unflatten(0, (self.code_size, 9))  # (axis, 9, C, H, W)
        a, b = self.encode(x_test[0:16:2]), self.encode(x_test[1:16:2])  # 8 pairs of test images
        t = torch.linspace(0, 1, 9, device=device)[None, :, None]  # (1, 9, 1)
        line = a[:, None] * (1 - t) + b[:, None] * t  # (8, 9, code)
        between = self.decode(line.flatten(0, 1)).unflatten(0, (len(a), 9))
        ends = torch.stack([x_test[0:16:2], x_test[1:16:2]], 1)  # the two images themselves
        between = torch.cat([ends[:, :1], between, ends[:, 1:]], 1)  # (8, 11, C, H, W)
        return Analysis(grids={"latent_axes": traversal.clamp(0, 1), "interpolation": between.clamp(0, 1)})
