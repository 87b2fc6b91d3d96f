"""Variational autoencoder (Kingma & Welling 2014), coding size 10.

Lecture 02, "Variational autoencoder (VAE)"; Hands-On ML 3rd ed. ch. 17 (784-150-100-10 and back, Nadam).
The encoder gives the mean coding mu and log sigma^2; a coding is z = mu + sigma * eps with eps ~ N(0, I)
(the reparameterization trick; the slide's "sigma^2 * eps" is a typo). The loss is the negative ELBO:
reconstruction (summed over pixels) + beta * KL(q(z|x) || N(0, I)), the KL in closed form
1/2 * sum(sigma^2 + mu^2 - log sigma^2 - 1). Both terms are logged separately.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from .base import Autoencoder, Generative, GradientTraining, ImageShape
from .stacked import mlp


class VAEConfig(GradientTraining):
    hidden: list[int] = Field(default_factory=lambda: [150, 100])
    code_size: int = Field(10, ge=1)
    activation: Literal["relu", "selu", "elu", "tanh"] = "relu"
    reconstruction: Literal["mse", "bce"] = "mse"
    beta: float = Field(1.0, ge=0)


class VAE(Autoencoder, Generative):
    def __init__(self, cfg: VAEConfig, shape: ImageShape):
        super().__init__()
        self.cfg, self.shape, self.code_size = cfg, shape, cfg.code_size
        d = int(np.prod(shape))
        self.encoder = mlp([d, *cfg.hidden], cfg.activation, last_act=True)
        self.mu = nn.Linear(cfg.hidden[-1], cfg.code_size)
        self.log_var = nn.Linear(cfg.hidden[-1], cfg.code_size)
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
