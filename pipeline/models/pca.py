"""PCA as a linear autoencoder: the scikit-learn baseline every autoencoder is compared with.

Lecture 02 ("an autoencoder with only linear activations and MSE is the same as PCA"). The principal
components are fitted by scikit-learn in closed form, then kept as buffers so that encoding and decoding are
ordinary torch operations like every other autoencoder's.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from .base import Autoencoder, AutoencoderConfig, ClosedForm, ImageShape, Width


class PCAConfig(AutoencoderConfig):
    code_size: Width = 30


class PCA(Autoencoder, ClosedForm):
    def __init__(self, cfg: PCAConfig, shape: ImageShape):
        super().__init__()
        self.shape = shape
        self.code_size = cfg.code_size
        d = int(np.prod(shape))
        # fitted in closed form, not by gradients: parameters that are counted but never trained
        self.mean = nn.Parameter(torch.zeros(d), requires_grad=False)  # (D,)
        self.components = nn.Parameter(torch.zeros(cfg.code_size, d), requires_grad=False)  # (K, D), orthonormal rows

    def fit(self, x: Tensor) -> None:
        flat = x.flatten(1).double().cpu().numpy()  # (N, D)
        from sklearn.decomposition import PCA as SklearnPCA  # seconds to import: only here
        pca = SklearnPCA(n_components=self.code_size, svd_solver="full").fit(flat)
        self.mean.copy_(torch.from_numpy(pca.mean_))
        self.components.copy_(torch.from_numpy(pca.components_))

    def encode(self, x: Tensor) -> Tensor:
        return (x.flatten(1) - self.mean) @ self.components.T  # (B, K)

    def decode(self, z: Tensor) -> Tensor:
        return (z @ self.components + self.mean).unflatten(1, self.shape)  # (B, C, H, W)

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        return {"loss": torch.mean((self(x) - x) ** 2)}
