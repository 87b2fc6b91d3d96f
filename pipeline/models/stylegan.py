"""StyleGAN (Karras et al. 2019, "A style-based generator architecture for GANs"), at digit scale.

Lecture 03, "StyleGAN", each mechanism as in the paper:
- mapping network: an MLP (here 4 layers) from z to an intermediate latent w, trained with a learning rate
  100 times smaller than the rest (`mapping_lr_scale`); `mapping_layers: 0` removes it (w is the normalised z:
  the ablation of the lecture's "in W the factors of variation become more linear");
- synthesis network: starts from a learned constant 4x4 input instead of the latent, then 8, 16, 32 pixels
  (`const_input: false`: from a learned linear projection of the first layer's w instead, the ablation of "the
  constant input increases performance").
  The constant is drawn from N(0, 1), as in StyleGAN2, not set to ones as in the first paper: a flat map
  leaves the first instance norm dividing zeros by sqrt(eps), so the constant's and the first noise strength's
  gradients start 10^4 times larger than any other parameter's (measured: 4.8e3 against 0.2), and the first
  steps' rounding noise sets the 4x4 layout (tests/test_gans.py);
- AdaIN: after each convolution every feature map is normalised (instance norm) and then scaled and shifted by
  a style, an affine function of w (one style per layer);
- noise inputs: per-pixel Gaussian noise added after each convolution, with a learned strength per channel
  (`noise_inputs: false` removes them);
- style mixing regularisation: for `mixing_prob` of the batches two latents are mapped and the layers switch
  from the first w to the second at a random crossover layer (the paper: 0.9; the study's `stylegan`
  trains with it, `stylegan_no_mixing` without); `sample_mixed` draws images whose styles come from several latents, the
  paper's test of the claim;
- truncation trick: at sampling, w is pulled toward the running mean w_avg: w' = w_avg + psi (w - w_avg).
No progressive growing (the paper kept ProGAN's; the ProGAN model of this study shows it). The discriminator
is ProGAN's (minibatch stddev, equalized learning rate); loss: non-saturating with R1 penalty on reals, as the
paper's FFHQ runs. Digits are padded to 32x32 for training, samples cropped back.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from .base import GAN, Analysis, Channels, GANTraining, ImageShape, LatentSpace, Width
from .progan import (Discriminator, EqualizedConv, EqualizedLinear, ProGANConfig, Schedule, check_size,
                     pixel_norm)


class StyleGANConfig(GANTraining):
    latent_dim: Width = 64  # z and w
    mapping_layers: int = Field(4, ge=0, le=16)  # 0: no mapping network, w = the normalised z
    const_input: bool = True  # False: the synthesis starts from a learned projection of w, not a learned constant
    noise_inputs: bool = True  # False: no per-pixel noise inputs (and no noise strengths)
    mapping_lr_scale: float = Field(0.01, gt=0, le=1)
    # the synthesis parameters that are not equalized (learned constant, noise strengths, biases): their Adam step
    # is lr x this, in the units of the parameter itself (an equalized weight's step is scaled by its He constant)
    plain_lr_scale: float = Field(1.0, gt=0, le=1)
    channels: Channels = Field(default_factory=lambda: [64, 32, 16, 8])  # at 4, 8, 16, 32 pixels
    d_channels: Channels = Field(default_factory=lambda: [64, 32, 16, 8])
    mixing_prob: float = Field(0.9, ge=0, le=1)
    coarse_layers: int = Field(4, ge=1)  # layers counted as "coarse" in the style-mixing figure (4x4 and 8x8)
    truncation: float = Field(1.0, ge=-2, le=2)  # psi used for the study's samples (1: no truncation)
    w_avg_beta: float = Field(0.995, ge=0, lt=1)
    objective: Literal["nonsaturating", "nonsaturating_r1", "wgan_gp"] = "nonsaturating_r1"
    lr_g: float = Field(2e-3, gt=0, le=1)
    lr_d: float = Field(2e-3, gt=0, le=1)
    beta1: float = Field(0.0, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)

    @model_validator(mode="after")
    def _shapes_agree(self):
        layers = 2 * len(self.channels)  # two style layers per resolution
        if len(self.d_channels) != len(self.channels):
            raise ValueError(f"d_channels: one width per resolution, as many as channels ({len(self.channels)}); "
                             f"got {len(self.d_channels)}")
        if self.coarse_layers >= layers:
            raise ValueError(f"coarse_layers: 1 to {layers - 1} (the synthesis network has {layers} style layers); "
                             f"got {self.coarse_layers}")
        group = ProGANConfig.model_fields["group_size"].default
        if self.batch_size % group:
            raise ValueError(f"batch_size: a multiple of {group}, the minibatch-stddev group of the discriminator; "
                             f"got {self.batch_size}")
        return self


class StyleGANNoMappingConfig(StyleGANConfig):  # the ablations of the lecture's claims, one mechanism off each
    mapping_layers: int = Field(0, ge=0, le=16)


class StyleGANNoConstConfig(StyleGANConfig):
    const_input: bool = False


class StyleGANNoNoiseConfig(StyleGANConfig):
    noise_inputs: bool = False


class StyleGANNoMixingConfig(StyleGANConfig):
    mixing_prob: float = Field(0.0, ge=0, le=1)


class StyleLayer(nn.Module):
    """(conv) -> noise -> bias -> LeakyReLU -> AdaIN with this layer's style."""

    def __init__(self, a: int, b: int, w_dim: int, conv: bool = True, noise: bool = True):
        super().__init__()
        self.conv = EqualizedConv(a, b, 3, 1) if conv else None
        self.noise_strength = nn.Parameter(torch.zeros(b)) if noise else None  # learned, per channel
        self.bias = nn.Parameter(torch.zeros(b))
        self.style = EqualizedLinear(w_dim, 2 * b, gain=1.0)
        with torch.no_grad():
            self.style.bias[:b] = 1.0  # scale starts at 1, shift at 0

    def forward(self, x: Tensor, w: Tensor, noise: Tensor | None) -> Tensor:
        if self.conv is not None:
            x = self.conv(x)
        b, _, h, width = x.shape
        if self.noise_strength is not None:
            if noise is None:
                noise = torch.randn(b, 1, h, width, device=x.device, dtype=x.dtype)
            x = x + self.noise_strength[None, :, None, None] * noise  # (B, C, H, W); the noise is one map
        x = F.leaky_relu(x + self.bias[None, :, None, None], 0.2)
        x = F.instance_norm(x, eps=1e-8)  # each feature map to mean 0, std 1
        scale, shift = self.style(w).chunk(2, dim=1)  # (B, C) each
        return x * scale[:, :, None, None] + shift[:, :, None, None]  # AdaIN


class Synthesis(nn.Module):
    def __init__(self, cfg: StyleGANConfig, out_channels: int):
        super().__init__()
        ch, wd, nz = cfg.channels, cfg.latent_dim, cfg.noise_inputs
        if cfg.const_input:
            self.const = nn.Parameter(torch.randn(1, ch[0], 4, 4))  # the learned constant input (N(0, 1): module doc)
        else:  # the ablation: a learned projection of the first layer's w, as a traditional generator's input
            self.project = EqualizedLinear(wd, ch[0] * 16, gain=1.0)
        self.layers = nn.ModuleList([StyleLayer(ch[0], ch[0], wd, conv=False, noise=nz),
                                     StyleLayer(ch[0], ch[0], wd, noise=nz)])
        for a, b in zip(ch[:-1], ch[1:]):
            self.layers.extend([StyleLayer(a, b, wd, noise=nz), StyleLayer(b, b, wd, noise=nz)])  # after a 2x upsampling
        self.to_rgb = EqualizedConv(ch[-1], out_channels, 1, 0, gain=1.0)

    def noise_shapes(self) -> list[tuple[int, int]]:
        return [(4 * 2 ** (i // 2), 4 * 2 ** (i // 2)) for i in range(len(self.layers))]

    def forward(self, ws: Tensor, noise: list[Tensor] | None = None) -> Tensor:
        if hasattr(self, "const"):
            x = self.const.expand(ws.shape[0], -1, -1, -1)  # (B, C0, 4, 4)
        else:
            x = self.project(ws[:, 0]).view(ws.shape[0], -1, 4, 4)  # (B, C0, 4, 4) from the first layer's w
        for i, layer in enumerate(self.layers):
            if i > 0 and i % 2 == 0:
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = layer(x, ws[:, i], None if noise is None else noise[i])
        return self.to_rgb(x)  # (B, C, 32, 32), linear output


class Generator(nn.Module):
    def __init__(self, cfg: StyleGANConfig, out_channels: int):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        for _ in range(cfg.mapping_layers):
            layers += [EqualizedLinear(cfg.latent_dim, cfg.latent_dim), nn.LeakyReLU(0.2)]
        self.mapping = nn.Sequential(*layers)
        self.synthesis = Synthesis(cfg, out_channels)
        self.n_layers = len(self.synthesis.layers)
        self.register_buffer("w_avg", torch.zeros(cfg.latent_dim))
        self.psi = cfg.truncation

    def map(self, z: Tensor) -> Tensor:
        return self.mapping(pixel_norm(z[:, :, None, None])[:, :, 0, 0])  # (B, w); no layers: w = the normalised z

    def truncate(self, w: Tensor, psi: float) -> Tensor:
        return self.w_avg + psi * (w - self.w_avg)

    def forward(self, z: Tensor) -> Tensor:
        w = self.map(z)
        ws = w[:, None].repeat(1, self.n_layers, 1)  # (B, layers, w): one style per layer
        if self.training:
            with torch.no_grad():
                self.w_avg.lerp_(w.mean(0), 1 - self.cfg.w_avg_beta)
            if torch.rand(()) < self.cfg.mixing_prob:  # style mixing regularisation
                w2 = self.map(torch.randn_like(z))
                cut = int(torch.randint(1, self.n_layers, ()))
                ws = torch.cat([ws[:, :cut], w2[:, None].repeat(1, self.n_layers - cut, 1)], dim=1)
        elif self.psi != 1.0:
            ws = self.truncate(ws, self.psi)
        return self.synthesis(ws)


class StyleGAN(GAN):
    def __init__(self, cfg: StyleGANConfig, shape: ImageShape):
        size = check_size("stylegan", cfg.channels, shape)
        d_cfg = ProGANConfig(channels=cfg.d_channels, growth="none", batch_size=cfg.batch_size)
        super().__init__(Generator(cfg, shape[0]), Discriminator(d_cfg, shape[0], Schedule(len(cfg.d_channels) - 1)),
                         cfg.latent_dim, shape=shape, size=size)
        self.cfg = cfg

    def generator_param_groups(self, lr: float) -> list[dict]:
        """Three learning rates: the mapping network's (x mapping_lr_scale), the synthesis network's equalized
        weights' (lr), and its plain parameters' (x plain_lr_scale: constant, noise strengths, biases)."""
        mapping = list(self.generator.mapping.parameters())
        synthesis = self.generator.synthesis
        equalized = [m.weight for m in synthesis.modules() if isinstance(m, (EqualizedConv, EqualizedLinear))]
        taken = {id(p) for p in mapping + equalized}
        plain = [p for p in self.generator.parameters() if id(p) not in taken]
        groups = [{"params": equalized, "lr": lr}, {"params": plain, "lr": lr * self.cfg.plain_lr_scale},
                  {"params": mapping, "lr": lr * self.cfg.mapping_lr_scale}]
        return [g for g in groups if g["params"]]  # no mapping network: no mapping group

    def latent_spaces(self) -> dict[str, LatentSpace]:
        """z, and the intermediate latent w = mapping(z) that the lecture says is more linear (lerp in it, as the
        paper); both through the same synthesis, truncated as the study's samples are."""
        ema = self.ema

        def from_w(w: Tensor) -> Tensor:
            ws = w[:, None].repeat(1, ema.n_layers, 1)
            return self.crop(ema.synthesis(ema.truncate(ws, ema.psi) if ema.psi != 1.0 else ws)).clamp(0, 1)

        return {**super().latent_spaces(), "w": LatentSpace(lambda n, g: ema.map(self.latent(n, g)), "lerp", from_w)}

    @torch.no_grad()
    def mixed_styles(self, n: int, latents: int, generator: torch.Generator) -> Tensor:
        """(n, layers, w): each image's styles from `latents` latents (the paper's Table 2), the layers switching
        from one w to the next at latents - 1 crossover layers, distinct and drawn at random per image; truncated
        as the study's samples are. latents = 1 is a plain sample's styles."""
        ema, n_layers = self.ema, self.ema.n_layers
        if not 1 <= latents <= n_layers:
            raise ValueError(f"latents: 1 to {n_layers} (one per style layer at most); got {latents}")
        w = ema.map(self.latent(n * latents, generator)).view(latents, n, -1)  # (latents, n, w)
        cuts = torch.rand(n, n_layers - 1, generator=generator).argsort(1)[:, : latents - 1] + 1  # (n, latents - 1)
        which = (torch.arange(n_layers)[None, :, None] >= cuts[:, None, :]).sum(2).to(w.device)  # (n, layers)
        ws = w.permute(1, 0, 2).gather(1, which[:, :, None].expand(-1, -1, w.shape[2]))  # latent `which` per layer
        return ema.truncate(ws, ema.psi) if ema.psi != 1.0 else ws

    @torch.no_grad()
    def sample_mixed(self, n: int, latents: int, generator: torch.Generator) -> Tensor:
        """n images in [0, 1] styled by `latents` latents each (`mixed_styles`): the moving-average generator with
        fresh noise."""
        was_training = self.ema.training
        self.ema.eval()
        images = self.crop(self.ema.synthesis(self.mixed_styles(n, latents, generator))).clamp(0, 1)
        self.ema.train(was_training)
        return images

    @torch.no_grad()
    def _images(self, ws: Tensor, noise: list[Tensor] | None) -> Tensor:
        return self.crop(self.ema.synthesis(ws, noise))

    @torch.no_grad()
    def analyze(self, classify, seed: int) -> Analysis:
        self.eval()
        g = torch.Generator().manual_seed(seed)
        ema, n = self.ema, self.ema.n_layers
        device = self.ema.w_avg.device
        noise = [torch.randn(1, 1, h, w, generator=g).to(device) for h, w in ema.synthesis.noise_shapes()]
        w = ema.map(self.latent(10, g))  # (10, w)
        a, b = w[:5], w[5:]
        ws = lambda x: x[:, None].repeat(1, n, 1)  # noqa: E731
        rows = [torch.cat([torch.zeros_like(self._images(ws(a[:1]), noise)), self._images(ws(b), noise)])]  # top row: B
        k = self.cfg.coarse_layers
        for i in range(len(a)):
            mixed = torch.cat([ws(a[i:i + 1]).repeat(len(b), 1, 1)[:, :k], ws(b)[:, k:]], dim=1)
            rows.append(torch.cat([self._images(ws(a[i:i + 1]), noise), self._images(mixed, noise)]))
        mixing = torch.stack(rows)  # (6, 6, C, H, W): corner blank, sources on the edges

        one = ws(w[:1]).repeat(32, 1, 1)
        draws = self._images(one, None)  # 32 noise draws for one w
        std = draws.std(0, keepdim=True)
        variation = torch.cat([draws[:7], std / std.max().clamp_min(1e-8)])[None]  # (1, 8, C, H, W)

        psis = [-1.0, -0.5, 0.0, 0.5, 0.7, 1.0]
        z = self.latent(6, g)
        sweep = torch.stack([torch.cat([self._images(ema.truncate(ws(ema.map(z[i:i + 1])), p), noise) for p in psis])
                             for i in range(len(z))])  # (6 latents, 6 psi, C, H, W)
        return Analysis(metrics={"noise_pixel_std": float(std.mean())},
                        grids={"style_mixing": mixing.clamp(0, 1), "stochastic_variation": variation.clamp(0, 1),
                               "truncation": sweep.clamp(0, 1)},
                        arrays={"truncation_psi": psis})
