"""Stacked (deep undercomplete) autoencoder: 784-100-30-100-784.

Lecture 02, "Stacked autoencoder"; Hands-On ML 3rd ed. ch. 17 (ReLU everywhere, linear output, MSE, Nadam).
The 2nd edition's choices (SELU, sigmoid output with binary cross-entropy, SGD) are config values.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator
from torch import Tensor, nn

from .base import Autoencoder, GradientTraining, Hidden, ImageShape, Width, mlp, reconstruction_loss


class StackedConfig(GradientTraining):
    hidden: Hidden = Field(default_factory=lambda: [100])  # encoder widths; the decoder mirrors them
    code_size: Width = 30
    activation: Literal["relu", "selu", "elu", "tanh", "sigmoid"] = "relu"
    output: Literal["linear", "sigmoid"] = "linear"
    loss: Literal["mse", "bce"] = "mse"

    @model_validator(mode="after")
    def _bce_needs_sigmoid(self):
        if self.loss == "bce" and self.output != "sigmoid":
            raise ValueError("loss: 'bce' needs output 'sigmoid'")
        return self


class Stacked(Autoencoder):
    def __init__(self, cfg: StackedConfig, shape: ImageShape):
        super().__init__()
        self.cfg, self.shape, self.code_size = cfg, shape, cfg.code_size
        d = int(np.prod(shape))
        widths = [d, *cfg.hidden, cfg.code_size]
        self.encoder = mlp(widths, cfg.activation, last_act=True)  # coding layer activated, as in the book
        self.decoder = mlp(widths[::-1], cfg.activation, last_act=False)
        self.out = nn.Sigmoid() if cfg.output == "sigmoid" else nn.Identity()

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x.flatten(1))  # (B, D) -> (B, code)

    def decode(self, z: Tensor) -> Tensor:
        return self.out(self.decoder(z)).unflatten(1, self.shape)  # (B, C, H, W)

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        return {"loss": reconstruction_loss(self.cfg.loss, self(x), x)}
