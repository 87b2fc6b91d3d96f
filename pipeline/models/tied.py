"""Stacked autoencoder with tied weights: the decoder uses the transposes of the encoder's weights.

Lecture 02, "Weight Tying" ("when the weight matrix in the encoding layer is W, use W^T in the decoding
layer"); Hands-On ML 3rd ed. ch. 17 (`DenseTranspose`). Same shape as `stacked` (784-100-30-100-784) with
about half its parameters: the decoder keeps only its own biases.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Autoencoder, ImageShape, activation, reconstruction_loss
from .stacked import StackedConfig


class TiedConfig(StackedConfig):
    pass


class Tied(Autoencoder):
    def __init__(self, cfg: TiedConfig, shape: ImageShape):
        super().__init__()
        self.cfg, self.shape, self.code_size = cfg, shape, cfg.code_size
        widths = [int(np.prod(shape)), *cfg.hidden, cfg.code_size]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        # the decoder's own biases, from the coding side back to the pixels: (hidden[-1],), ..., (D,)
        self.decoder_biases = nn.ParameterList(nn.Parameter(torch.zeros(w)) for w in widths[-2::-1])
        self.act = activation(cfg.activation)
        self.out = nn.Sigmoid() if cfg.output == "sigmoid" else nn.Identity()

    def encode(self, x: Tensor) -> Tensor:
        h = x.flatten(1)
        for layer in self.layers:
            h = self.act(layer(h))  # the coding layer is activated too, as in `stacked`
        return h  # (B, code)

    def decode(self, z: Tensor) -> Tensor:
        h = z
        for i, (layer, bias) in enumerate(zip(reversed(self.layers), self.decoder_biases)):
            h = F.linear(h, layer.weight.t(), bias)  # W^T: (out, in) transposed maps back
            h = self.act(h) if i < len(self.layers) - 1 else self.out(h)
        return h.unflatten(1, self.shape)  # (B, C, H, W)

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        return {"loss": reconstruction_loss(self.cfg.loss, self(x), x)}
