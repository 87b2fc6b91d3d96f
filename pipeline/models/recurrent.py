"""Recurrent autoencoder: each image is a sequence of its rows.

Lecture 02, "Recurrent autoencoder" ("regard each row as a sequence; the encoder is a sequence-to-vector
RNN and the decoder a vector-to-sequence RNN"); Hands-On ML 3rd ed. ch. 17: encoder LSTM(100) -> LSTM(30)
keeping the last state, decoder repeats the coding at every time step -> LSTM(100) -> a dense layer per row.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from .base import Autoencoder, GradientTraining, ImageShape, Width, reconstruction_loss


class RecurrentConfig(GradientTraining):
    hidden: Width = 100
    code_size: Width = 30
    output: Literal["linear", "sigmoid"] = "linear"
    loss: Literal["mse", "bce"] = "mse"


class Recurrent(Autoencoder):
    def __init__(self, cfg: RecurrentConfig, shape: ImageShape):
        super().__init__()
        self.cfg, self.shape, self.code_size = cfg, shape, cfg.code_size
        c, h, w = shape
        self.rows, self.row_size = h, c * w
        self.encoder1 = nn.LSTM(self.row_size, cfg.hidden, batch_first=True)
        self.encoder2 = nn.LSTM(cfg.hidden, cfg.code_size, batch_first=True)
        self.decoder = nn.LSTM(cfg.code_size, cfg.hidden, batch_first=True)
        self.out = nn.Sequential(nn.Linear(cfg.hidden, self.row_size), nn.Sigmoid() if cfg.output == "sigmoid" else nn.Identity())

    def encode(self, x: Tensor) -> Tensor:
        rows = x.permute(0, 2, 1, 3).flatten(2)  # (B, C, H, W) -> (B, H, C*W): one time step per row
        h, _ = self.encoder1(rows)  # (B, H, hidden)
        _, (last, _) = self.encoder2(h)  # (1, B, code): sequence to vector
        return last[0]

    def decode(self, z: Tensor) -> Tensor:
        steps = z[:, None, :].expand(-1, self.rows, -1)  # (B, H, code): the coding at every step
        h, _ = self.decoder(steps)  # (B, H, hidden)
        rows = self.out(h)  # (B, H, C*W)
        c, _, w = self.shape
        return rows.unflatten(2, (c, w)).permute(0, 2, 1, 3)  # (B, C, H, W)

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        return {"loss": reconstruction_loss(self.cfg.loss, self(x), x)}
