"""Stacked denoising autoencoder: noise on the inputs at training time, the clean image as the target.

Lecture 02, "Stacked denoising autoencoder"; Hands-On ML 3rd ed. ch. 17 (Vincent et al. 2008): the stacked
784-100-30-100-784 network with Gaussian noise (sigma 0.2) or dropout (rate 0.5) applied to its inputs
during training only. `analyze` measures what it is for: the MSE of its reconstructions of noisy test
images against the clean ones, beside the noise itself and the clean-input MSE.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from .base import Analysis, ImageShape, reconstruction_loss
from .stacked import Stacked, StackedConfig


class DenoisingConfig(StackedConfig):
    noise: Literal["gaussian", "dropout"] = "gaussian"
    noise_level: float = Field(0.2, gt=0)  # sigma for gaussian, drop rate for dropout

    @model_validator(mode="after")
    def _rate_below_one(self):
        if self.noise == "dropout" and self.noise_level >= 1:
            raise ValueError(f"noise_level: a drop rate for dropout, below 1 (got {self.noise_level})")
        return self


class GaussianDenoisingConfig(DenoisingConfig):
    noise: Literal["gaussian", "dropout"] = "gaussian"
    noise_level: float = Field(0.2, gt=0)


class DropoutDenoisingConfig(DenoisingConfig):
    noise: Literal["gaussian", "dropout"] = "dropout"
    noise_level: float = Field(0.5, gt=0)


class Denoising(Stacked):
    def __init__(self, cfg: DenoisingConfig, shape: ImageShape):
        super().__init__(cfg, shape)

    def corrupt(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.rand if self.cfg.noise == "dropout" else torch.randn
        r = noise(x.shape, generator=generator).to(x.device)
        if self.cfg.noise == "dropout":
            keep = 1 - self.cfg.noise_level
            return x * (r < keep) / keep  # inverted dropout, as nn.Dropout does
        return x + self.cfg.noise_level * r

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        return {"loss": reconstruction_loss(self.cfg.loss, self(self.corrupt(x)), x)}

    @torch.no_grad()
    def analyze(self, x_train: Tensor, x_test: Tensor, seed: int) -> Analysis:
        noisy = self.corrupt(x_test, torch.Generator().manual_seed(seed))
        denoised = self.reconstruct(noisy)
        shown = torch.stack([x_test[:8], noisy[:8].clamp(0, 1), denoised[:8]])  # (3 rows, 8, C, H, W)
        return Analysis(
            metrics={"noisy_test_mse": float(((denoised - x_test) ** 2).mean()),
                     "noise_mse": float(((noisy.clamp(0, 1) - x_test) ** 2).mean())},
            grids={"denoising": shown},
        )
