"""DCGAN (Radford et al. 2016, "Unsupervised representation learning with deep convolutional GANs").

Lecture 03, "Deep convolutional GAN (DCGAN)", following the paper's guidelines:
strided convolutions instead of pooling in the discriminator, transposed convolutions to upsample in the
generator, no fully connected hidden layers (the latent is projected by a transposed convolution from 1x1 to
the start size, which is the paper's "project and reshape"), batch norm everywhere except the generator's
output and the discriminator's input, ReLU in the generator with a tanh output, LeakyReLU(0.2) in the
discriminator, Adam with lr 2e-4 and beta1 0.5. For 28x28 digits the generator goes 1 -> 7 -> 14 -> 28.
Its analysis is the paper's latent vector arithmetic and interpolation, on digits (`latents.py`).
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor, nn

from pipeline import StudyError

from .base import GAN, MAX_WIDTH, Analysis, GANTraining, ImageShape, Width
from .latents import latent_arithmetic


class DCGANConfig(GANTraining):
    latent_dim: Width = 100
    g_width: int = Field(64, ge=4, le=MAX_WIDTH)  # channels of the generator's last hidden layer; doubled at each step back
    d_width: int = Field(64, ge=4, le=MAX_WIDTH)  # channels of the discriminator's first layer; doubled at each step down
    upsamplings: int = Field(2, ge=1, le=6)  # the image is start_size * 2**upsamplings on a side


def start_size(shape: ImageShape, upsamplings: int) -> int:
    size = shape[1]
    if shape[1] != shape[2] or size % 2**upsamplings or size // 2**upsamplings < 2:
        raise StudyError(
            f"dcgan: image size {shape[1]}x{shape[2]} must be square and a multiple of 2**upsamplings "
            f"(= {2**upsamplings}) of at least {2 ** (upsamplings + 1)}"
        )
    return size // 2**upsamplings


class Generator(nn.Module):
    def __init__(self, cfg: DCGANConfig, shape: ImageShape):
        super().__init__()
        s0, n = start_size(shape, cfg.upsamplings), cfg.upsamplings
        widths = [cfg.g_width * 2 ** (n - 1 - i) for i in range(n)]  # e.g. [128, 64]
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(cfg.latent_dim, widths[0], s0, 1, 0, bias=False),  # (B, z, 1, 1) -> (B, w0, s0, s0)
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]  # x2
        layers += [nn.ConvTranspose2d(widths[-1], shape[0], 4, 2, 1), nn.Tanh()]  # last x2, to (B, C, H, W)
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z[:, :, None, None])  # (B, z) -> (B, C, H, W) in [-1, 1]


class Discriminator(nn.Module):
    def __init__(self, cfg: DCGANConfig, shape: ImageShape):
        super().__init__()
        s0, n = start_size(shape, cfg.upsamplings), cfg.upsamplings
        widths = [cfg.d_width * 2**i for i in range(n)]  # e.g. [64, 128]
        layers: list[nn.Module] = [nn.Conv2d(shape[0], widths[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]  # no BN
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2, True)]  # /2
        layers += [nn.Conv2d(widths[-1], 1, s0, 1, 0)]  # (B, w, s0, s0) -> (B, 1, 1, 1): a logit, no FC layer
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten()  # (B,)


def init_weights(m: nn.Module) -> None:
    """The paper's initialisation: N(0, 0.02) for convolutions, N(1, 0.02) for batch-norm scales."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class DCGAN(GAN):
    def __init__(self, cfg: DCGANConfig, shape: ImageShape):
        generator, discriminator = Generator(cfg, shape), Discriminator(cfg, shape)
        generator.apply(init_weights)
        discriminator.apply(init_weights)
        super().__init__(generator, discriminator, cfg.latent_dim, shape=shape)
        self.cfg = cfg

    def analyze(self, classify, seed: int) -> Analysis:
        return latent_arithmetic(self, classify, seed)
