"""Greedy layer-wise training of a stacked autoencoder.

Lecture 02, "Greedy layer-wise training"; Hands-On ML 3rd ed. ch. 17 ("Training one autoencoder at a time").
For 784-100-30: phase `layer1` trains a shallow autoencoder 784-100-784 on the images; phase `layer2` trains a
second one, 100-30-100, on the first one's codings (held fixed); the two are then stacked (784-100-30-100-784)
and phase `finetune` trains the whole stack end to end. The phase is a schedule of epochs that the one
autoencoder loop advances (`start_epoch`), not a second loop; the history records each epoch's phase, and
the evaluation reports the test MSE at the end of each phase (before and after fine-tuning).
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from .base import Autoencoder, ImageShape, activation, reconstruction_loss
from .stacked import StackedConfig


class GreedyConfig(StackedConfig):
    epochs: int = Field(30, ge=1, le=1_000_000)  # in all: pretraining of each layer, then fine-tuning
    pretrain_epochs: int = Field(10, ge=1, le=1_000_000)  # epochs per layer before fine-tuning the stack

    @model_validator(mode="after")
    def _room_to_finetune(self):
        layers = len(self.hidden) + 1
        if self.epochs <= layers * self.pretrain_epochs:
            raise ValueError(f"epochs: ({self.epochs}) must exceed {layers} layers x pretrain_epochs "
                             f"({self.pretrain_epochs}) to leave epochs for fine-tuning")
        return self


class Greedy(Autoencoder):
    def __init__(self, cfg: GreedyConfig, shape: ImageShape):
        super().__init__()
        self.cfg, self.shape, self.code_size = cfg, shape, cfg.code_size
        widths = [int(np.prod(shape)), *cfg.hidden, cfg.code_size]
        self.encoders = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.decoders = nn.ModuleList(nn.Linear(b, a) for a, b in zip(widths[:-1], widths[1:]))  # decoders[i]: layer i back
        self.act = activation(cfg.activation)
        self.out = nn.Sigmoid() if cfg.output == "sigmoid" else nn.Identity()
        self.phase = len(self.encoders)  # index of the layer being pretrained; == number of layers: fine-tuning

    def phase_name(self) -> str:
        return f"layer{self.phase + 1}" if self.phase < len(self.encoders) else "finetune"

    def start_epoch(self, epoch: int) -> str:
        self.phase = min((epoch - 1) // self.cfg.pretrain_epochs, len(self.encoders))
        return self.phase_name()

    def _up(self, h: Tensor, i: int) -> Tensor:
        return self.act(self.encoders[i](h))

    def _down(self, h: Tensor, i: int) -> Tensor:
        return self.out(self.decoders[i](h)) if i == 0 else self.act(self.decoders[i](h))

    def encode(self, x: Tensor) -> Tensor:
        h = x.flatten(1)
        for i in range(len(self.encoders)):
            h = self._up(h, i)
        return h  # (B, code)

    def decode(self, z: Tensor) -> Tensor:
        h = z
        for i in reversed(range(len(self.decoders))):
            h = self._down(h, i)
        return h.unflatten(1, self.shape)

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        if self.phase == len(self.encoders):
            return {"loss": reconstruction_loss(self.cfg.loss, self(x), x)}
        with torch.no_grad():  # the layers below are already trained and held fixed
            h = x.flatten(1)
            for i in range(self.phase):
                h = self._up(h, i)
        h_hat = self._down(self._up(h, self.phase), self.phase)  # a shallow autoencoder on h
        kind = self.cfg.loss if self.phase == 0 else "mse"  # codings are not probabilities
        return {"loss": reconstruction_loss(kind, h_hat, h)}
