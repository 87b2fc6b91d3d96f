"""The model registry: one entry per model, keyed by the name params.yaml and dvc.yaml use.

The family lives in the entry; no code branches on a model's name. To add a model, write its file (config
class above its nn.Module), add an entry here and a block under its family in params.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from torch import nn

from pipeline import StudyError

from .base import ImageShape, ModelConfig
from .dcgan import DCGAN, DCGANConfig
from .pca import PCA, PCAConfig
from .stacked import Stacked, StackedConfig
from .vae import VAE, VAEConfig

Family = Literal["autoencoder", "gan"]
PARAMS_BLOCK: dict[str, str] = {"autoencoder": "autoencoders", "gan": "gans"}  # family -> params.yaml key
TRAIN_STAGE: dict[str, str] = {"autoencoder": "train_ae", "gan": "train_gan"}  # family -> dvc.yaml stage


@dataclass(frozen=True)
class ModelSpec:
    family: Family
    config: type[ModelConfig]
    build: Callable[[ModelConfig, ImageShape], nn.Module]
    summary: str


MODELS: dict[str, ModelSpec] = {
    "pca": ModelSpec("autoencoder", PCAConfig, PCA, "PCA, the linear baseline (scikit-learn)"),
    "stacked": ModelSpec("autoencoder", StackedConfig, Stacked, "stacked undercomplete autoencoder"),
    "vae": ModelSpec("autoencoder", VAEConfig, VAE, "variational autoencoder"),
    "dcgan": ModelSpec("gan", DCGANConfig, DCGAN, "deep convolutional GAN"),
}


def spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise StudyError(f"unknown model '{name}'; registered models: {', '.join(MODELS)}")
    return MODELS[name]


def build(name: str, cfg: ModelConfig, shape: ImageShape) -> nn.Module:
    return spec(name).build(cfg, shape)
