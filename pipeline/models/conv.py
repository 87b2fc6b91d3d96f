"""Convolutional autoencoder: convolutions and pooling shrink height and width while depth grows;
transposed convolutions grow them back.

Lecture 02, "Convolutional autoencoder"; Hands-On ML 3rd ed. ch. 17: 3x3 convolutions with 16, 32, 64 maps,
each followed by 2x2 max pooling (28 -> 14 -> 7 -> 3), a 3x3 convolution to 30 maps averaged to the coding;
the decoder projects the coding to 64 maps of 3x3 and three stride-2 transposed convolutions return to 28x28.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor, nn

from pipeline import StudyError

from .base import Autoencoder, Channels, GradientTraining, ImageShape, Width, reconstruction_loss


class ConvConfig(GradientTraining):
    channels: Channels = Field(default_factory=lambda: [16, 32, 64])  # per pooling stage
    code_size: Width = 30
    output: Literal["linear", "sigmoid"] = "linear"
    loss: Literal["mse", "bce"] = "mse"


class Conv(Autoencoder):
    def __init__(self, cfg: ConvConfig, shape: ImageShape):
        super().__init__()
        self.cfg, self.shape, self.code_size = cfg, shape, cfg.code_size
        sizes = [shape[1]]
        for _ in cfg.channels:
            sizes.append(sizes[-1] // 2)
        if shape[1] != shape[2] or sizes[-1] < 1:
            raise StudyError(f"conv: a square image of at least {2 ** len(cfg.channels)} pixels is needed "
                             f"for {len(cfg.channels)} pooling stages (got {shape[1]}x{shape[2]})")
        layers: list[nn.Module] = []
        for a, b in zip([shape[0], *cfg.channels], cfg.channels):
            layers += [nn.Conv2d(a, b, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(2)]  # H, W halve; depth grows
        layers += [nn.Conv2d(cfg.channels[-1], cfg.code_size, 3, padding=1), nn.ReLU(True),
                   nn.AdaptiveAvgPool2d(1), nn.Flatten()]  # (B, code)
        self.encoder = nn.Sequential(*layers)
        s = sizes[-1]
        up: list[nn.Module] = [nn.Linear(cfg.code_size, cfg.channels[-1] * s * s), nn.Unflatten(1, (cfg.channels[-1], s, s))]
        outs = [*cfg.channels[-2::-1], shape[0]]  # e.g. 32, 16, C
        for i, (a, b) in enumerate(zip([cfg.channels[-1], *outs[:-1]], outs)):
            src, dst = sizes[-1 - i], sizes[-2 - i]
            pad = 1 if dst == 2 * src else 0  # out = 2*src + 1 - 2*pad + output_padding must equal dst
            up += [nn.ConvTranspose2d(a, b, 3, stride=2, padding=pad, output_padding=pad)]
            if i < len(outs) - 1:
                up += [nn.ReLU(True)]
        up += [nn.Sigmoid() if cfg.output == "sigmoid" else nn.Identity()]
        self.decoder = nn.Sequential(*up)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)  # (B, C, H, W)

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        return {"loss": reconstruction_loss(self.cfg.loss, self(x), x)}
