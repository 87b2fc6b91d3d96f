"""What every model of the study shares: strict config bases and the three family interfaces.

An autoencoder maps images to codings and back and owns its loss (`loss(x) -> dict`), so the single
autoencoder loop never needs to know which model it trains. A GAN owns a generator, a discriminator and an
EMA copy of the generator; its objective (non-saturating BCE, ...) is named in its config and lives in
`pipeline.train.objectives`. A diffusion model owns a noise-predicting network, its EMA copy and its loss
(`loss(x) -> dict`, like an autoencoder's) and samples by denoising in steps. Images enter and leave every model
in [0, 1], shape (B, C, H, W).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Annotated, Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

ImageShape = tuple[int, int, int]  # (C, H, W)

# Bounds of every size in a config, list elements included: a careless edit stops at the config with one line
# naming the key, not in PyTorch (a width 0 divides by zero, a negative one makes a negative tensor shape, a huge
# one asks for terabytes).
MAX_WIDTH = 8192
Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]  # units of a dense layer, channels of a convolution, a code size
Hidden = Annotated[list[Width], Field(max_length=16)]  # hidden widths of a dense stack (may be empty)
Channels = Annotated[list[Width], Field(min_length=1, max_length=8)]  # one width per resolution, from 4x4 up
BatchSize = Annotated[int, Field(ge=2, le=65536)]


class Strict(BaseModel):
    """A config block: unknown keys are errors, values are frozen after validation, and types are not coerced
    (`true` is not a width of 1, `2.0` not an epoch count, `"1e-3"` not a learning rate)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ModelConfig(Strict):
    """Base of every registry entry's config."""


class AutoencoderConfig(ModelConfig):
    """Shared by every autoencoder: what its evaluation draws besides the standard metrics."""

    codings_map: Literal["tsne", "none"] = "none"  # a 2-D t-SNE map of the test codings, coloured by class


class BudgetedTraining(AutoencoderConfig):
    """Knobs of the autoencoder loop for a generative autoencoder (the VAE): it trains for the study's
    `budget.images`, the budget every generative model shares, so it has no epoch count of its own."""

    batch_size: BatchSize = 32
    optimizer: Literal["nadam", "adam", "sgd", "rmsprop"] = "nadam"
    lr: float = Field(1e-3, gt=0, le=1)


class GradientTraining(BudgetedTraining):
    """Knobs of the autoencoder loop, shared by every gradient-trained (non-generative) autoencoder."""

    epochs: int = Field(20, ge=1, le=1_000_000)


class GANTraining(ModelConfig):
    """Knobs of the GAN loop, shared by every GAN. The length of training is the study's `budget.images`."""

    batch_size: BatchSize = 64
    latent_dim: Width = 100
    objective: Literal["nonsaturating", "nonsaturating_r1", "wgan_gp"] = "nonsaturating"
    penalty_weight: float = Field(10.0, ge=0)  # lambda of WGAN-GP's gradient penalty, gamma of R1
    drift: float = Field(0.001, ge=0)  # WGAN-GP: epsilon_drift * D(real)^2 keeps the critic near 0 (ProGAN)
    penalty_every: int = Field(1, ge=1)  # lazy regularisation: the penalty on every k-th step, weighted by k
    optimizer: Literal["adam", "rmsprop"] = "adam"
    lr_g: float = Field(2e-4, gt=0, le=1)
    lr_d: float = Field(2e-4, gt=0, le=1)
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)


class DiffusionTraining(ModelConfig):
    """Knobs of the diffusion loop, shared by every diffusion model. The length of training is `budget.images`."""

    batch_size: BatchSize = 64
    optimizer: Literal["adam", "nadam"] = "adam"
    lr: float = Field(2e-4, gt=0, le=1)


def activation(name: str) -> nn.Module:
    layers = {"relu": nn.ReLU, "selu": nn.SELU, "elu": nn.ELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    return layers[name]()


def mlp(widths: list[int], act: str, last_act: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if last_act or i < len(widths) - 2:
            layers.append(activation(act))
    return nn.Sequential(*layers)


def reconstruction_loss(kind: str, x_hat: Tensor, x: Tensor) -> Tensor:
    """Mean per-pixel loss; `x_hat` is a probability when kind is 'bce'."""
    if kind == "bce":
        return F.binary_cross_entropy(x_hat.clamp(1e-7, 1 - 1e-7), x)
    return F.mse_loss(x_hat, x)


@dataclass
class LatentSpace:
    """A space a generator's images can be reached from, for the path-length and separability metrics: how to draw
    n points of it, how the paper interpolates in it ("slerp" for a Gaussian input, "lerp" for a learned one), and
    the images (in [0, 1], the data's shape) of a batch of its points. Drawing and imaging are deterministic given
    the generator's noise inputs, which the metric fixes per pair."""

    draw: Callable[[int, torch.Generator], Tensor]
    interpolation: Literal["slerp", "lerp"]
    images: Callable[[Tensor], Tensor]


@dataclass
class Analysis:
    """What a model's own evaluation adds to the standard metrics (see `Autoencoder.analyze`)."""

    metrics: dict[str, float] = field(default_factory=dict)  # into metrics/<model>.json
    grids: dict[str, Tensor] = field(default_factory=dict)  # image batches, saved as grids in the report
    arrays: dict[str, list[float]] = field(default_factory=dict)  # series for the report's figures


class Autoencoder(nn.Module):
    """Encoder + decoder. Subclasses set `code_size` and implement encode, decode and loss."""

    code_size: int

    def start_epoch(self, epoch: int) -> str | None:
        """Called by the loop before each epoch (1-based); a model with a training schedule (greedy
        layer-wise training) switches phase here and returns the phase's name, others return None."""
        return None

    def analyze(self, x_train: Tensor, x_test: Tensor, seed: int) -> Analysis:
        """Model-specific evaluation (noise robustness, sparsity, interpolations, ...); none by default."""
        return Analysis()

    def encode(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, code_size)
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:  # (B, code_size) -> (B, C, H, W)
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        """The training objective on a batch: key 'loss' is minimised, the other keys are logged."""
        raise NotImplementedError

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Deterministic reconstruction in [0, 1], for metrics and grids."""
        return self.forward(x).clamp(0, 1)


class Generative:
    """A model that can draw new images."""

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:  # (n, C, H, W) in [0, 1]
        raise NotImplementedError


class ClosedForm:
    """A model fitted in one shot (no gradient loop), e.g. PCA."""

    def fit(self, x: Tensor) -> None:
        raise NotImplementedError


class GAN(nn.Module, Generative):
    """Generator (latent -> image in [-1, 1]) and discriminator (image -> score), plus an EMA generator.

    A GAN may work at a larger square size than the data (ProGAN and StyleGAN want powers of two): the loop
    shows it real images padded to `size` (`real_view`), and its samples are cropped back to the data's shape.
    Hooks the one GAN loop calls, all no-ops here: `advance` before every step (a growth schedule), and
    `generator_param_groups` (per-part learning rates); the evaluation calls `analyze`.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, latent_dim: int,
                 shape: ImageShape | None = None, size: int | None = None):
        super().__init__()
        self.latent_dim = latent_dim
        self.generator = generator
        self.discriminator = discriminator
        self.ema = copy.deepcopy(generator).requires_grad_(False)
        self.shape = shape
        self.size = size or (shape[1] if shape else 0)
        extra = self.size - shape[1] if shape else 0
        self.pad = (extra // 2, extra - extra // 2)  # (before, after), on both axes

    def latent(self, n: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        device = device or next(self.parameters()).device
        if generator is None:  # training: drawn where the model is (no host-to-device copy, no sync)
            return torch.randn(n, self.latent_dim, device=device)
        dtype = next(self.parameters()).dtype  # float32, or float64 for the path-length metric's copy
        return torch.randn(n, self.latent_dim, generator=generator, device="cpu").to(device, dtype)  # (n, latent), seeded

    def advance(self, step: int, total_steps: int) -> dict[str, float]:
        """Called before every optimizer step of `total_steps`; returns schedule values to log (none by default)."""
        return {}

    def phase(self, step: int, total_steps: int) -> str:
        """The name of the part of training `step` belongs to where steps differ in work (a resolution of a
        growing model); the training loop counts one step's FLOPs per phase. One phase by default."""
        return ""

    def generator_param_groups(self, lr: float) -> list[dict]:
        return [{"params": list(self.generator.parameters()), "lr": lr}]

    def real_view(self, x: Tensor) -> Tensor:
        """Real images in [-1, 1] as the discriminator should see them now (padded to `size`)."""
        a, b = self.pad
        return F.pad(x, (a, b, a, b), value=-1.0) if a or b else x  # a black border

    def crop(self, out: Tensor) -> Tensor:
        """Generator output at `size` in [-1, 1] -> images of the data's shape in [0, 1]."""
        a, b = self.pad
        if a or b:
            out = out[:, :, a:out.shape[2] - b, a:out.shape[3] - b]
        return (out + 1) / 2

    def forward(self, z: Tensor) -> Tensor:
        """The EMA generator as a plain function z -> image in [0, 1] (what MLflow serves)."""
        return self.crop(self.ema(z))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        was_training = self.ema.training
        self.ema.eval()
        images = self(self.latent(n, generator))
        self.ema.train(was_training)
        return images.clamp(0, 1)

    def analyze(self, classify: Callable[[Tensor], Tensor], seed: int) -> Analysis:
        """Model-specific evaluation; `classify` maps images in [0, 1] to the evaluator's classes."""
        return Analysis()

    def latent_spaces(self) -> dict[str, LatentSpace]:
        """The spaces the EMA generator's images are reached from: the input z (Gaussian: slerp); a generator with
        an intermediate latent (StyleGAN's w) adds its own."""
        return {"z": LatentSpace(lambda n, g: self.latent(n, g), "slerp", lambda z: self(z).clamp(0, 1))}


class Diffusion(nn.Module, Generative):
    """A network trained to undo a fixed noising process, plus its EMA copy (which samples).

    `loss(x)` draws noise levels and noise for a batch in [0, 1] and returns the training objective (key 'loss');
    `sample(n, generator, steps=None)` denoises pure noise in `steps` steps (None: the configured count). The loop
    moves `ema` toward `net` after every step; the evaluation calls `analyze`."""

    net: nn.Module
    ema: nn.Module

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None, steps: int | None = None) -> Tensor:
        raise NotImplementedError

    def analyze(self, classify: Callable[[Tensor], Tensor], seed: int) -> Analysis:
        """Model-specific evaluation; `classify` maps images in [0, 1] to the evaluator's classes."""
        return Analysis()
