"""The model registry: one entry per model, keyed by the name params.yaml and dvc.yaml use.

The family lives in the entry; no code branches on a model's name. An entry names the file under
pipeline/models that implements the model (its config class above its nn.Module) and the two classes in it; the
file is imported when the model is asked for (`spec(name).config`, `.build`), so that a stage imports the code of
its own model only, and its DVC deps list that code alone: `pipeline/models/deps/<name>/` links the files of the
model's own import closure (`python -m pipeline.code` writes them; tests/test_consistency.py checks them). To add
a model, write its file, add an entry here and a block under its family in params.yaml, and run
`python -m pipeline.code`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Literal

from torch import nn

from pipeline import StudyError

from .base import ImageShape, ModelConfig

Family = Literal["autoencoder", "gan", "diffusion"]
PARAMS_BLOCK: dict[str, str] = {"autoencoder": "autoencoders", "gan": "gans", "diffusion": "diffusion"}  # params.yaml key
TRAIN_STAGE: dict[str, str] = {"autoencoder": "train_ae", "gan": "train_gan", "diffusion": "train_diffusion"}  # dvc.yaml
EVAL_STAGE: dict[str, str] = {"autoencoder": "evaluate_ae", "gan": "evaluate_gan", "diffusion": "evaluate_diffusion"}


@dataclass(frozen=True)
class ModelSpec:
    family: Family
    module: str  # the file that implements it: pipeline/models/<module>.py
    config_class: str  # its config class in that file
    module_class: str  # its nn.Module in that file, built as cls(config, image_shape)
    summary: str

    @property
    def module_name(self) -> str:
        return f"{__name__}.{self.module}"

    @property
    def config(self) -> type[ModelConfig]:
        return getattr(importlib.import_module(self.module_name), self.config_class)

    @property
    def build(self) -> Callable[[ModelConfig, ImageShape], nn.Module]:
        return getattr(importlib.import_module(self.module_name), self.module_class)


MODELS: dict[str, ModelSpec] = {
    "pca": ModelSpec("autoencoder", "pca", "PCAConfig", "PCA", "PCA, the linear baseline (scikit-learn)"),
    "linear": ModelSpec("autoencoder", "linear", "LinearConfig", "LinearAE", "linear autoencoder (= PCA's subspace)"),
    "stacked": ModelSpec("autoencoder", "stacked", "StackedConfig", "Stacked", "stacked undercomplete autoencoder"),
    "tied": ModelSpec("autoencoder", "tied", "TiedConfig", "Tied", "stacked autoencoder with tied weights"),
    "greedy": ModelSpec("autoencoder", "greedy", "GreedyConfig", "Greedy",
                        "stacked autoencoder trained greedily layer-wise"),
    "recurrent": ModelSpec("autoencoder", "recurrent", "RecurrentConfig", "Recurrent",
                           "LSTM sequence-to-vector-to-sequence"),
    "conv": ModelSpec("autoencoder", "conv", "ConvConfig", "Conv", "convolutional autoencoder"),
    "denoising_gaussian": ModelSpec("autoencoder", "denoising", "GaussianDenoisingConfig", "Denoising",
                                    "denoising, Gaussian noise"),
    "denoising_dropout": ModelSpec("autoencoder", "denoising", "DropoutDenoisingConfig", "Denoising",
                                   "denoising, dropout noise"),
    "sparse_l1": ModelSpec("autoencoder", "sparse", "L1SparseConfig", "Sparse", "sparse, L1 penalty"),
    "sparse_kl": ModelSpec("autoencoder", "sparse", "KLSparseConfig", "Sparse", "sparse, KL-divergence penalty"),
    "vae": ModelSpec("autoencoder", "vae", "VAEConfig", "VAE", "variational autoencoder"),
    "gan": ModelSpec("gan", "gan", "MLPGANConfig", "MLPGAN", "the book's fully connected GAN"),
    "dcgan": ModelSpec("gan", "dcgan", "DCGANConfig", "DCGAN", "deep convolutional GAN"),
    "progan": ModelSpec("gan", "progan", "ProGANConfig", "ProGAN", "progressive growing GAN"),
    "progan_no_growing": ModelSpec("gan", "progan", "ProGANNoGrowingConfig", "ProGAN", "ProGAN ablation: no growing"),
    "progan_no_mbstd": ModelSpec("gan", "progan", "ProGANNoMbstdConfig", "ProGAN",
                                 "ProGAN ablation: no minibatch stddev"),
    "progan_no_eqlr": ModelSpec("gan", "progan", "ProGANNoEqualizedLRConfig", "ProGAN",
                                "ProGAN ablation: no equalized LR"),
    "progan_no_pixelnorm": ModelSpec("gan", "progan", "ProGANNoPixelNormConfig", "ProGAN",
                                     "ProGAN ablation: no pixel norm"),
    "stylegan": ModelSpec("gan", "stylegan", "StyleGANConfig", "StyleGAN", "style-based generator"),
    "ddpm": ModelSpec("diffusion", "ddpm", "DDPMConfig", "DDPM", "denoising diffusion (DDPM, DDIM sampling)"),
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
