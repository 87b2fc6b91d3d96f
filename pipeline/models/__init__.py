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
from .conv import Conv, ConvConfig
from .dcgan import DCGAN, DCGANConfig
from .ddpm import DDPM, DDPMConfig
from .gan import MLPGAN, MLPGANConfig
from .denoising import Denoising, DropoutDenoisingConfig, GaussianDenoisingConfig
from .greedy import Greedy, GreedyConfig
from .linear import LinearAE, LinearConfig
from .pca import PCA, PCAConfig
from .progan import (ProGAN, ProGANConfig, ProGANNoEqualizedLRConfig, ProGANNoGrowingConfig, ProGANNoMbstdConfig,
                     ProGANNoPixelNormConfig)
from .recurrent import Recurrent, RecurrentConfig
from .sparse import KLSparseConfig, L1SparseConfig, Sparse
from .stacked import Stacked, StackedConfig
from .stylegan import StyleGAN, StyleGANConfig
from .tied import Tied, TiedConfig
from .vae import VAE, VAEConfig

Family = Literal["autoencoder", "gan", "diffusion"]
PARAMS_BLOCK: dict[str, str] = {"autoencoder": "autoencoders", "gan": "gans", "diffusion": "diffusion"}  # params.yaml key
TRAIN_STAGE: dict[str, str] = {"autoencoder": "train_ae", "gan": "train_gan", "diffusion": "train_diffusion"}  # dvc.yaml
EVAL_STAGE: dict[str, str] = {"autoencoder": "evaluate_ae", "gan": "evaluate_gan", "diffusion": "evaluate_diffusion"}


@dataclass(frozen=True)
class ModelSpec:
    family: Family
    config: type[ModelConfig]
    build: Callable[[ModelConfig, ImageShape], nn.Module]
    summary: str


MODELS: dict[str, ModelSpec] = {
    "pca": ModelSpec("autoencoder", PCAConfig, PCA, "PCA, the linear baseline (scikit-learn)"),
    "linear": ModelSpec("autoencoder", LinearConfig, LinearAE, "linear autoencoder (= PCA's subspace)"),
    "stacked": ModelSpec("autoencoder", StackedConfig, Stacked, "stacked undercomplete autoencoder"),
    "tied": ModelSpec("autoencoder", TiedConfig, Tied, "stacked autoencoder with tied weights"),
    "greedy": ModelSpec("autoencoder", GreedyConfig, Greedy, "stacked autoencoder trained greedily layer-wise"),
    "recurrent": ModelSpec("autoencoder", RecurrentConfig, Recurrent, "LSTM sequence-to-vector-to-sequence"),
    "conv": ModelSpec("autoencoder", ConvConfig, Conv, "convolutional autoencoder"),
    "denoising_gaussian": ModelSpec("autoencoder", GaussianDenoisingConfig, Denoising, "denoising, Gaussian noise"),
    "denoising_dropout": ModelSpec("autoencoder", DropoutDenoisingConfig, Denoising, "denoising, dropout noise"),
    "sparse_l1": ModelSpec("autoencoder", L1SparseConfig, Sparse, "sparse, L1 penalty"),
    "sparse_kl": ModelSpec("autoencoder", KLSparseConfig, Sparse, "sparse, KL-divergence penalty"),
    "vae": ModelSpec("autoencoder", VAEConfig, VAE, "variational autoencoder"),
    "gan": ModelSpec("gan", MLPGANConfig, MLPGAN, "the book's fully connected GAN"),
    "dcgan": ModelSpec("gan", DCGANConfig, DCGAN, "deep convolutional GAN"),
    "progan": ModelSpec("gan", ProGANConfig, ProGAN, "progressive growing GAN"),
    "progan_no_growing": ModelSpec("gan", ProGANNoGrowingConfig, ProGAN, "ProGAN ablation: no growing"),
    "progan_no_mbstd": ModelSpec("gan", ProGANNoMbstdConfig, ProGAN, "ProGAN ablation: no minibatch stddev"),
    "progan_no_eqlr": ModelSpec("gan", ProGANNoEqualizedLRConfig, ProGAN, "ProGAN ablation: no equalized LR"),
    "progan_no_pixelnorm": ModelSpec("gan", ProGANNoPixelNormConfig, ProGAN, "ProGAN ablation: no pixel norm"),
    "stylegan": ModelSpec("gan", StyleGANConfig, StyleGAN, "style-based generator"),
    "ddpm": ModelSpec("diffusion", DDPMConfig, DDPM, "denoising diffusion (DDPM, DDIM sampling)"),
}


def run_name(name: str, seed: int) -> str:
    """One training run of a model: its stages, files and MLflow runs are named `<model>-<seed>` (dcgan-42)."""
    return f"{name}-{seed}"


def spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise StudyError(f"unknown model '{name}'; registered models: {', '.join(MODELS)}")
    return MODELS[name]


def build(name: str, cfg: ModelConfig, shape: ImageShape) -> nn.Module:
    return spec(name).build(cfg, shape)
