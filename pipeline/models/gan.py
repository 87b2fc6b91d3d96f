"""The plain GAN of the book: two small fully connected networks.

Lecture 03, "GAN" (Goodfellow et al. 2014); Hands-On ML 3rd ed. ch. 17: the generator maps a 30-dimensional
Gaussian noise through dense layers of 100 and 150 SELU units to 784 pixels, the discriminator mirrors it
(150, 100, one logit), trained with binary cross-entropy (the non-saturating form) and RMSprop. The book's
generator ends in a sigmoid on [0, 1] pixels; here it ends in tanh on pixels scaled to [-1, 1], the same
function up to an affine change of units, so that every GAN of the study shares one data range.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field
from torch import Tensor, nn

from .base import GAN, GANTraining, Hidden, ImageShape, Width, mlp


class MLPGANConfig(GANTraining):
    latent_dim: Width = 30
    g_hidden: Hidden = Field(default_factory=lambda: [100, 150])
    d_hidden: Hidden = Field(default_factory=lambda: [150, 100])
    activation: Literal["selu", "relu", "elu", "tanh"] = "selu"
    optimizer: Literal["adam", "rmsprop"] = "rmsprop"
    lr_g: float = Field(1e-3, gt=0, le=1)
    lr_d: float = Field(1e-3, gt=0, le=1)


class Generator(nn.Module):
    def __init__(self, cfg: MLPGANConfig, shape: ImageShape):
        super().__init__()
        self.shape = shape
        self.net = nn.Sequential(mlp([cfg.latent_dim, *cfg.g_hidden, int(np.prod(shape))], cfg.activation, False), nn.Tanh())

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).unflatten(1, self.shape)  # (B, z) -> (B, C, H, W) in [-1, 1]


class Discriminator(nn.Module):
    def __init__(self, cfg: MLPGANConfig, shape: ImageShape):
        super().__init__()
        self.net = mlp([int(np.prod(shape)), *cfg.d_hidden, 1], cfg.activation, False)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1)).flatten()  # (B,) logits


class MLPGAN(GAN):
    def __init__(self, cfg: MLPGANConfig, shape: ImageShape):
        super().__init__(Generator(cfg, shape), Discriminator(cfg, shape), cfg.latent_dim)
        self.cfg = cfg
