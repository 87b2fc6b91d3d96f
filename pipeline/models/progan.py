"""Progressive growing GAN (Karras et al. 2018, "Progressive growing of GANs for improved quality, stability,
and variation"), at digit scale.

Lecture 03, "Progressive growing GAN (ProGAN, PGGAN)", and its discriminator table, shrunk: 4 -> 8 -> 16 -> 32
pixels with 128, 128, 64, 32 feature maps (the paper: 4 -> 1024 with 512 ... 16). The four mechanisms, each a
config value so that the ablation runs the same code with one of them off:
- `growth: progressive`: both networks start at 4x4; each new resolution's layers are faded in, the output
  (and the real images) blended as alpha * new + (1 - alpha) * upsampled old, alpha rising linearly from 0 to 1
  over one phase, then trained one phase more at that resolution. The phases are equal shares of the training
  budget: `growth_share` of it is spent growing (1 phase at 4x4, then 2 per larger resolution), the rest at the
  top resolution. `none`: every layer from the start.
- `minibatch_stddev: on`: the discriminator's last block gets one more feature map. As in the paper: the
  standard deviation of each feature at each location over a group of images, averaged over features and
  locations to one statistic per group, replicated over the locations of the group's images.
- `equalized_lr: on`: weights drawn from N(0, 1) and multiplied at run time by their He constant
  sqrt(2 / fan_in), so that Adam's per-weight step sizes are on one scale. `off`: He initialisation as usual.
- `pixel_norm: on`: after each generator convolution, each pixel's feature vector divided by its RMS
  (b = a / sqrt(mean_j a_j^2 + 1e-8)).
Loss: WGAN-GP with the paper's drift term. Digits (28x28) are padded to 32x32 for training and the samples
cropped back, so that every model is evaluated on the same images.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from pipeline import StudyError

from .base import GAN, Analysis, Channels, GANTraining, ImageShape, Width

OnOff = Literal["on", "off"]


class ProGANConfig(GANTraining):
    latent_dim: Width = 128
    channels: Channels = Field(default_factory=lambda: [64, 32, 16, 8])  # at 4, 8, 16, 32 pixels
    growth: Literal["progressive", "none"] = "progressive"
    minibatch_stddev: OnOff = "on"
    equalized_lr: OnOff = "on"
    pixel_norm: OnOff = "on"
    growth_share: float = Field(0.4375, gt=0, le=1)  # share of the budget spent growing (phases of equal length)
    group_size: int = Field(4, ge=2, le=65536)  # minibatch-stddev group
    objective: Literal["nonsaturating", "nonsaturating_r1", "wgan_gp"] = "wgan_gp"
    lr_g: float = Field(1e-3, gt=0, le=1)
    lr_d: float = Field(1e-3, gt=0, le=1)
    beta1: float = Field(0.0, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)

    @model_validator(mode="after")
    def _schedule_fits(self):
        if self.batch_size % self.group_size and self.minibatch_stddev == "on":
            raise ValueError(f"group_size: must divide batch_size ({self.batch_size}) when minibatch_stddev is on "
                             f"(got {self.group_size})")
        return self


class ProGANNoGrowingConfig(ProGANConfig):
    growth: Literal["progressive", "none"] = "none"


class ProGANNoMbstdConfig(ProGANConfig):
    minibatch_stddev: OnOff = "off"


class ProGANNoEqualizedLRConfig(ProGANConfig):
    equalized_lr: OnOff = "off"


class ProGANNoPixelNormConfig(ProGANConfig):
    pixel_norm: OnOff = "off"


class EqualizedConv(nn.Conv2d):
    """A convolution whose weights are N(0, 1) scaled at run time by He's constant gain / sqrt(fan_in) (when
    `equalized`). Without it the same constant is the standard deviation of the initial weights instead: the
    network starts identical in distribution, and only the learning dynamics differ (the ablation's point)."""

    def __init__(self, a: int, b: int, k: int, padding: int = 0, equalized: bool = True, gain: float = math.sqrt(2)):
        super().__init__(a, b, k, padding=padding)
        he = gain / math.sqrt(a * k * k)
        self.scale = he if equalized else 1.0
        nn.init.normal_(self.weight, std=1.0 if equalized else he)
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class EqualizedLinear(nn.Linear):
    def __init__(self, a: int, b: int, equalized: bool = True, gain: float = math.sqrt(2)):
        super().__init__(a, b)
        he = gain / math.sqrt(a)  # as EqualizedConv: run-time scale when equalized, initial std otherwise
        self.scale = he if equalized else 1.0
        nn.init.normal_(self.weight, std=1.0 if equalized else he)
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


def pixel_norm(x: Tensor) -> Tensor:
    return x / torch.sqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)  # over the features of each pixel


def minibatch_stddev(x: Tensor, group: int) -> Tensor:
    """Append one feature map: the std over a group of images, averaged over features and locations (one value
    per group, as in the paper)."""
    b, c, h, w = x.shape
    g = min(group, b)
    y = x.reshape(g, b // g, c, h, w)  # (G, B/G, C, H, W): image i is in group i % (B/G)
    # the variance over the group written out: Tensor.var over a strided leading dim is 40x slower on CPU
    std = torch.sqrt((y - y.mean(dim=0)).pow(2).mean(dim=0) + 1e-8)  # (B/G, C, H, W): over the group
    per_group = std.mean(dim=(1, 2, 3), keepdim=True)  # (B/G, 1, 1, 1): averaged over features and locations
    return torch.cat([x, per_group.expand(-1, -1, h, w).repeat(g, 1, 1, 1)], dim=1)  # (B, C + 1, H, W)


class Schedule(nn.Module):
    """The growth state both networks read: resolution level (0: 4x4) and fade-in alpha.

    Plain Python numbers, so that forward passes branch on constants (torch.export can trace them), kept in
    the state dict through `get_extra_state`."""

    def __init__(self, top: int):
        super().__init__()
        self.level, self.alpha = top, 1.0

    def get_extra_state(self) -> dict:
        return {"level": self.level, "alpha": self.alpha}

    def set_extra_state(self, state: dict) -> None:
        self.level, self.alpha = int(state["level"]), float(state["alpha"])


class Generator(nn.Module):
    def __init__(self, cfg: ProGANConfig, out_channels: int):
        super().__init__()
        eq, self.norm = cfg.equalized_lr == "on", cfg.pixel_norm == "on"
        ch = cfg.channels
        self.schedule = Schedule(len(ch) - 1)
        self.project = EqualizedLinear(cfg.latent_dim, ch[0] * 16, eq, gain=math.sqrt(2) / 4)  # to (C0, 4, 4)
        self.blocks = nn.ModuleList([nn.ModuleList([EqualizedConv(ch[0], ch[0], 3, 1, eq)])])
        for a, b in zip(ch[:-1], ch[1:]):
            self.blocks.append(nn.ModuleList([EqualizedConv(a, b, 3, 1, eq), EqualizedConv(b, b, 3, 1, eq)]))
        self.to_rgb = nn.ModuleList(EqualizedConv(c, out_channels, 1, 0, eq, gain=1.0) for c in ch)

    def _act(self, x: Tensor) -> Tensor:
        x = F.leaky_relu(x, 0.2)
        return pixel_norm(x) if self.norm else x

    def forward(self, z: Tensor) -> Tensor:
        level, alpha = self.schedule.level, self.schedule.alpha
        if self.norm:
            z = pixel_norm(z[:, :, None, None])[:, :, 0, 0]
        h = self._act(self.project(z).unflatten(1, (-1, 4, 4)))  # (B, C0, 4, 4)
        previous = h
        for i in range(level + 1):
            if i > 0:
                previous = h
                h = F.interpolate(h, scale_factor=2, mode="nearest")  # (B, C, 2H, 2W)
            for conv in self.blocks[i]:
                h = self._act(conv(h))
        out = self.to_rgb[level](h)
        if level > 0 and alpha < 1:  # fading in: blend with the previous resolution's output, upsampled
            old = F.interpolate(self.to_rgb[level - 1](previous), scale_factor=2, mode="nearest")
            out = alpha * out + (1 - alpha) * old
        return out  # (B, C, 4 * 2**level, 4 * 2**level)


class Discriminator(nn.Module):
    def __init__(self, cfg: ProGANConfig, in_channels: int, schedule: Schedule):
        super().__init__()
        eq, ch = cfg.equalized_lr == "on", cfg.channels
        self.schedule = schedule  # shared with the generator: one growth state
        self.mbstd = cfg.group_size if cfg.minibatch_stddev == "on" else 0
        self.from_rgb = nn.ModuleList(EqualizedConv(in_channels, c, 1, 0, eq) for c in ch)
        self.blocks = nn.ModuleList([nn.ModuleList()])  # index 0: the 4x4 block below
        for a, b in zip(ch[:-1], ch[1:]):
            self.blocks.append(nn.ModuleList([EqualizedConv(b, b, 3, 1, eq), EqualizedConv(b, a, 3, 1, eq)]))
        extra = 1 if self.mbstd else 0
        self.final = nn.ModuleList([EqualizedConv(ch[0] + extra, ch[0], 3, 1, eq), EqualizedConv(ch[0], ch[0], 4, 0, eq)])
        self.out = EqualizedLinear(ch[0], 1, eq, gain=1.0)

    def forward(self, x: Tensor) -> Tensor:
        level, alpha = self.schedule.level, self.schedule.alpha
        h = F.leaky_relu(self.from_rgb[level](x), 0.2)
        for i in range(level, 0, -1):
            for conv in self.blocks[i]:
                h = F.leaky_relu(conv(h), 0.2)
            h = F.avg_pool2d(h, 2)  # downsample
            if i == level and alpha < 1:  # fading in: blend with the downsampled image through the old input
                old = F.leaky_relu(self.from_rgb[level - 1](F.avg_pool2d(x, 2)), 0.2)
                h = alpha * h + (1 - alpha) * old
        if self.mbstd:
            h = minibatch_stddev(h, self.mbstd)  # (B, C0 + 1, 4, 4)
        for conv in self.final:
            h = F.leaky_relu(conv(h), 0.2)  # ... -> (B, C0, 1, 1)
        return self.out(h.flatten(1)).flatten()  # (B,) scores


def check_size(model: str, channels: list[int], shape: ImageShape) -> int:
    """The side the networks work at (4x4 doubled once per further width in `channels`); the data must fit."""
    size = 4 * 2 ** (len(channels) - 1)
    if shape[1] != shape[2] or shape[1] > size:
        raise StudyError(f"{model}: images must be square and at most {size}x{size} "
                         f"({len(channels)} resolutions from 4x4); got {shape[1]}x{shape[2]}")
    return size


class ProGAN(GAN):
    def __init__(self, cfg: ProGANConfig, shape: ImageShape):
        top = len(cfg.channels) - 1
        size = check_size("progan", cfg.channels, shape)
        generator = Generator(cfg, shape[0])
        super().__init__(generator, Discriminator(cfg, shape[0], generator.schedule), cfg.latent_dim,
                         shape=shape, size=size)
        self.cfg, self.top = cfg, top

    # -- the growth schedule, advanced by the GAN loop before every step -------------------------------------
    def phases(self) -> int:
        return 2 * self.top + 1  # 4x4, then fade-in + stabilise for each larger resolution

    def stage(self, step: int, total_steps: int) -> tuple[int, float]:
        """(level, alpha) after `step` of `total_steps` optimizer steps: a pure function of the step, so resuming
        is exact. Phase i covers [i, i + 1) x growth_share / phases of the budget."""
        if self.cfg.growth == "none":
            return self.top, 1.0
        phase = round(step * self.phases() / (total_steps * self.cfg.growth_share), 9)  # in phases, fractional
        if phase < 1:
            return 0, 1.0
        level = 1 + int((phase - 1) // 2)
        if level > self.top:
            return self.top, 1.0
        return level, min(1.0, phase - 1 - (level - 1) * 2)

    def phase(self, step: int, total_steps: int) -> str:
        """The resolution, and whether a new block is fading in (both paths computed): what a step's work depends on."""
        level, alpha = self.stage(step, total_steps)
        return f"{4 * 2**level}px" + (" fade-in" if level > 0 and alpha < 1 else "")

    def advance(self, step: int, total_steps: int) -> dict[str, float]:
        level, alpha = self.stage(step, total_steps)
        for schedule in (self.generator.schedule, self.ema.schedule):  # the discriminator shares the generator's
            schedule.level, schedule.alpha = level, alpha
        return {"resolution": float(4 * 2**level), "alpha": alpha}

    # -- images in and out ---------------------------------------------------------------------------------
    def real_view(self, x: Tensor) -> Tensor:
        """Real images as the discriminator sees them now: padded, downsampled, and faded like the output."""
        x = super().real_view(x)  # (B, C, size, size)
        level, alpha = self.generator.schedule.level, self.generator.schedule.alpha
        x = F.avg_pool2d(x, 2 ** (self.top - level)) if level < self.top else x
        if level > 0 and alpha < 1:
            x = alpha * x + (1 - alpha) * F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest")
        return x

    def forward(self, z: Tensor) -> Tensor:
        out = self.ema(z)  # (B, C, r, r) at the current resolution
        if out.shape[-1] < self.size:
            out = F.interpolate(out, size=self.size, mode="nearest")
        return self.crop(out)

    def analyze(self, classify, seed: int) -> Analysis:
        """The growth schedule over the budget (200 points), for the report's alpha plot."""
        points = [self.stage(i, 200) for i in range(201)]
        return Analysis(arrays={"schedule_share": [i / 200 for i in range(len(points))],
                                "schedule_resolution": [4 * 2**lvl for lvl, _ in points],
                                "schedule_alpha": [a for _, a in points]})
