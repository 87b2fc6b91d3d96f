"""Linear autoencoder: no activations, MSE. The lecture's claim: "it is the same as PCA".

Lecture 02, "Undercomplete autoencoder"; Hands-On ML 3rd ed. ch. 17 ("Performing PCA with an undercomplete
linear autoencoder"). With biases and an MSE loss, the optimum of a linear autoencoder spans the same
subspace as the top principal components (Baldi & Hornik 1989), though not with orthonormal axes. `analyze`
checks it: the principal angles between the decoder's column space and PCA's top components (0° = same
subspace), next to the test MSE of both.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from .base import Analysis, Autoencoder, GradientTraining, ImageShape, Width


class LinearConfig(GradientTraining):
    code_size: Width = 30


class LinearAE(Autoencoder):
    def __init__(self, cfg: LinearConfig, shape: ImageShape):
        super().__init__()
        self.shape, self.code_size = shape, cfg.code_size
        d = int(np.prod(shape))
        self.encoder = nn.Linear(d, cfg.code_size)
        self.decoder = nn.Linear(cfg.code_size, d)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x.flatten(1))  # (B, D) -> (B, code)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z).unflatten(1, self.shape)  # (B, C, H, W)

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        return {"loss": torch.mean((self(x) - x) ** 2)}

    @torch.no_grad()
    def analyze(self, x_train: Tensor, x_test: Tensor, seed: int) -> Analysis:
        from scipy.linalg import subspace_angles  # scipy and scikit-learn: seconds to import, only here
        from sklearn.decomposition import PCA as SklearnPCA
        pca = SklearnPCA(n_components=self.code_size, svd_solver="full").fit(x_train.flatten(1).double().cpu().numpy())
        decoder_columns = self.decoder.weight.double().cpu().numpy()  # (D, code)
        angles = np.degrees(subspace_angles(decoder_columns, pca.components_.T))  # largest first
        return Analysis(
            metrics={"principal_angle_max_deg": float(angles.max()), "principal_angle_mean_deg": float(angles.mean())},
            arrays={"principal_angles_deg": sorted(float(a) for a in angles)},
        )
