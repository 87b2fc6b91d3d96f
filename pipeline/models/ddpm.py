"""Denoising diffusion probabilistic model (Ho et al. 2020, "DDPM") with DDIM sampling (Song et al. 2021).

Hands-On ML 3rd ed. ch. 17, "Diffusion models" (the book's notebook trains one on Fashion-MNIST). Images
x_0 in [-1, 1] are noised by a fixed forward process q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), with
abar_t = prod_{s<=t} (1 - beta_s) and beta_t from a named schedule: `linear` (the paper: 1e-4 to 0.02 over
T = 1000 steps) or `cosine` (Nichol & Dhariwal 2021: abar_t = f(t) / f(0), f(t) = cos^2((t/T + s)/(1 + s) pi/2),
s = 0.008, betas clipped at 0.999; the book's choice). A small U-Net eps_theta(x_t, t) (sinusoidal time
embedding, residual blocks, skip connections across resolutions, optional self-attention at the lowest one)
predicts the noise; the loss is the paper's "simple" MSE ||eps - eps_theta||^2 (or the book's Huber).

Sampling, always by the EMA network:
- ancestral DDPM over all T steps: x_{t-1} = mu~_t(x_t, x0_hat) + sqrt(beta~_t) z, the posterior q(x_{t-1} | x_t, x_0)
  at the predicted x0_hat (clipped to [-1, 1], as the paper's code does),
  beta~_t = (1 - abar_{t-1})/(1 - abar_t) beta_t;
- DDIM on a sub-sequence of S steps: x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps + sigma z,
  sigma = eta sqrt((1 - abar_prev)/(1 - abar_t)) sqrt(1 - abar_t/abar_prev). eta = 0 is deterministic; eta = 1 with
  all T steps from t = T-1 is the ancestral sampler again (a test checks it). DDIM starts where x0_hat is well
  conditioned (1 / sqrt(abar_t) <= 20: t = 966 of the cosine schedule's 1000), not at T-1. The study's samples use
  `sample_steps` DDIM steps.
Time steps are indices 0 .. T-1 in the code (the paper's 1 .. T).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from pipeline import StudyError

from .base import Analysis, Channels, Diffusion, DiffusionTraining, ImageShape


MAX_X0_GAIN = 20.0  # DDIM's first step: 1 / sqrt(abar_t) at most this (`DDPM.first_step`)


class DDPMConfig(DiffusionTraining):
    timesteps: int = Field(1000, ge=2, le=100_000)  # T
    schedule: Literal["linear", "cosine"] = "linear"
    beta_start: float = Field(1e-4, gt=0, lt=1)  # the linear schedule's first and last beta
    beta_end: float = Field(0.02, gt=0, lt=1)
    # patch 2: the U-Net works at half the image's side (a 2x2 strided convolution in, a transposed one out)
    patch: int = Field(1, ge=1, le=8)
    channels: Channels = Field(default_factory=lambda: [32, 64])  # U-Net widths from its full size, halving the side
    attention: Literal["lowest", "none"] = "none"  # self-attention at the lowest resolution
    loss: Literal["mse", "huber"] = "mse"
    sample_steps: int = Field(20, ge=1, le=100_000)  # DDIM steps of the study's samples
    eta: float = Field(1.0, ge=0, le=1)  # DDIM's noise: 0 deterministic, 1 as much as ancestral sampling
    # the report's FID against sampling steps: DDIM at each count (eta 0 and `eta`), and ancestral DDPM over all T
    # steps, on sweep_samples images each (the same noise; fewer than the study's sample count: T passes an image)
    steps_sweep: list[int] = Field(default_factory=lambda: [5, 10, 20, 50], min_length=1, max_length=20)
    sweep_samples: int = Field(200, ge=10, le=100_000)

    @model_validator(mode="after")
    def _consistent(self):
        if self.schedule == "linear" and self.beta_start >= self.beta_end:
            raise ValueError(f"beta_end: above beta_start ({self.beta_start}); got {self.beta_end}")
        for key, steps in (("sample_steps", [self.sample_steps]), ("steps_sweep", self.steps_sweep)):
            if any(not 1 <= s <= self.timesteps for s in steps):
                got = steps if len(steps) > 1 else steps[0]
                raise ValueError(f"{key}: 1 to timesteps ({self.timesteps}); got {got}")
        return self


def betas(schedule: str, timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """beta_t for t = 0 .. T-1, float64."""
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    s = 0.008
    f = torch.cos((torch.arange(timesteps + 1, dtype=torch.float64) / timesteps + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]  # abar at 0 .. T
    return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)


def alpha_bar(schedule: str, timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    return torch.cumprod(1 - betas(schedule, timesteps, beta_start, beta_end), 0)


# --- the network: eps_theta(x_t, t) ------------------------------------------------------------------------


def time_embedding(t: Tensor, dim: int) -> Tensor:
    """Transformer-style sinusoidal embedding of the step index: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([angles.sin(), angles.cos()], 1)


def norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, c), c)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the time embedding added in between, a 1x1 skip where widths differ."""

    def __init__(self, c_in: int, c_out: int, emb: int):
        super().__init__()
        self.block1 = nn.Sequential(norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))
        self.time = nn.Sequential(nn.SiLU(), nn.Linear(emb, c_out))
        self.block2 = nn.Sequential(norm(c_out), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.block1(x) + self.time(emb)[:, :, None, None]  # (B, c_out, H, W)
        return self.skip(x) + self.block2(h)


class SelfAttention(nn.Module):
    """One head of attention over the H*W positions, residual."""

    def __init__(self, c: int):
        super().__init__()
        self.norm, self.qkv, self.out = norm(c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).chunk(3, 1)  # (B, C, HW) each
        attn = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), -1)  # (B, HW, HW)
        return x + self.out((v @ attn.transpose(1, 2)).view(b, c, h, w))


class UNet(nn.Module):
    """Down: a residual block per level, a strided convolution between levels; middle: block (attention) block;
    up: each level's block takes the upsampled path concatenated with the down path's output at that size."""

    def __init__(self, cfg: DDPMConfig, shape: ImageShape):
        super().__init__()
        ch, c0 = cfg.channels, cfg.channels[0]
        div = cfg.patch * 2 ** (len(ch) - 1)
        if shape[1] % div or shape[2] % div:
            raise StudyError(f"ddpm: image size {shape[1]}x{shape[2]} must be a multiple of patch * 2**(levels - 1) "
                             f"(= {div}) for patch {cfg.patch} and channels {ch}")
        emb = 4 * c0
        self.c0 = c0
        self.time = nn.Sequential(nn.Linear(c0, emb), nn.SiLU(), nn.Linear(emb, emb))
        p = cfg.patch
        self.inp = nn.Conv2d(shape[0], c0, 3, padding=1) if p == 1 else nn.Conv2d(shape[0], c0, p, stride=p)
        self.down = nn.ModuleList(ResBlock(a, b, emb) for a, b in zip([c0, *ch[:-1]], ch))
        self.downsample = nn.ModuleList(nn.Conv2d(c, c, 3, stride=2, padding=1) for c in ch[:-1])
        self.mid1, self.mid2 = ResBlock(ch[-1], ch[-1], emb), ResBlock(ch[-1], ch[-1], emb)
        self.attention = SelfAttention(ch[-1]) if cfg.attention == "lowest" else nn.Identity()
        # up, lowest level first: level i takes the path (width ch[i+1], or ch[-1] from the middle) and its skip
        ins = [ch[-1], *ch[::-1][:-1]]  # the path's width arriving at each level, lowest first
        self.up = nn.ModuleList(ResBlock(c_in + c, c, emb) for c_in, c in zip(ins, ch[::-1]))
        self.upsample = nn.ModuleList(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                                    nn.Conv2d(c, c, 3, padding=1)) for c in ch[1:][::-1])
        last = nn.Conv2d(c0, shape[0], 3, padding=1) if p == 1 else nn.ConvTranspose2d(c0, shape[0], p, stride=p)
        self.out = nn.Sequential(norm(c0), nn.SiLU(), last)
        nn.init.zeros_(self.out[-1].weight)  # starts by predicting zero noise
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        emb = self.time(time_embedding(t, self.c0))  # (B, 4*c0)
        h, skips = self.inp(x), []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)  # (B, ch[i], H/2^i, W/2^i)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid2(self.attention(self.mid1(h, emb)), emb)
        for i, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], 1), emb)
            if i < len(self.upsample):
                h = self.upsample[i](h)
        return self.out(h)  # (B, C, H, W): the predicted noise


# --- the model: loss and samplers --------------------------------------------------------------------------


class DDPM(Diffusion):
    def __init__(self, cfg: DDPMConfig, shape: ImageShape):
        super().__init__()
        self.cfg, self.shape, self.T = cfg, shape, cfg.timesteps
        self.net = UNet(cfg, shape)
        # the EMA network only samples (thousands of passes an evaluation): channels-last, in which oneDNN's
        # inference convolutions at this size run about 1.4x faster on a CPU (training runs the same either way)
        self.ema = UNet(cfg, shape).requires_grad_(False).to(memory_format=torch.channels_last)
        self.ema.load_state_dict(self.net.state_dict())
        b = betas(cfg.schedule, cfg.timesteps, cfg.beta_start, cfg.beta_end)
        abar = torch.cumprod(1 - b, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=b.dtype), abar[:-1]])
        # float64 schedules, kept as float32 buffers (they travel with the model file and the device)
        for name, value in {"beta": b, "abar": abar, "abar_prev": abar_prev,
                            "posterior_var": b * (1 - abar_prev) / (1 - abar),  # beta~_t
                            "coef_x0": abar_prev.sqrt() * b / (1 - abar),  # mu~_t = coef_x0 x0 + coef_xt x_t
                            "coef_xt": (1 - b).sqrt() * (1 - abar_prev) / (1 - abar)}.items():
            self.register_buffer(name, value.float())

    def noised(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """A draw of q(x_t | x_0): sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
        a = self.abar[t][:, None, None, None]  # (B, 1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def loss(self, x: Tensor, t: Tensor | None = None, noise: Tensor | None = None) -> dict[str, Tensor]:
        """The training objective on images in [0, 1]; the loop passes `t` and `noise` (drawn at the global batch
        size, so that several processes see what one would), a direct call draws them."""
        x0 = x * 2 - 1
        t = torch.randint(0, self.T, (len(x),), device=x.device) if t is None else t
        noise = torch.randn_like(x0) if noise is None else noise
        pred = self.net(self.noised(x0, t, noise), t)
        loss = F.mse_loss(pred, noise) if self.cfg.loss == "mse" else F.huber_loss(pred, noise)
        return {"loss": loss}

    def _noise(self, shape: tuple, generator: torch.Generator | None) -> Tensor:
        device = self.abar.device
        if generator is None:
            return torch.randn(shape, device=device)
        return torch.randn(shape, generator=generator).to(device)  # seeded on the CPU: the same on every device

    def _x0(self, x: Tensor, t: int) -> tuple[Tensor, Tensor]:
        """The EMA network's x0_hat (clipped) at step t and the noise that x0_hat implies."""
        a = self.abar[t]
        eps = self.ema(x, torch.full((len(x),), t, device=x.device, dtype=torch.long))
        x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
        return x0, (x - a.sqrt() * x0) / (1 - a).sqrt()

    @torch.no_grad()
    def ancestral(self, n: int, generator: torch.Generator | None = None, keep: int = 0) -> Tensor | list[Tensor]:
        """Ancestral DDPM sampling over all T steps: images in [0, 1]; with `keep` > 0 the list of `keep` + 1 states
        x_t (t = T, ..., 0, evenly spaced) instead, the reverse trajectory."""
        x = self._noise((n, *self.shape), generator)
        kept = {round(i * self.T / keep) for i in range(keep + 1)} if keep else set()
        states = [x] if self.T in kept else []
        for t in reversed(range(self.T)):
            x0, _ = self._x0(x, t)
            x = self.coef_x0[t] * x0 + self.coef_xt[t] * x
            if t > 0:
                x = x + self.posterior_var[t].sqrt() * self._noise(x.shape, generator)
            if t in kept:
                states.append(x)
        to_images = lambda v: ((v + 1) / 2).clamp(0, 1)
        return [to_images(s) for s in states] if keep else to_images(x)

    def first_step(self) -> int:
        """Where DDIM starts from pure noise: the last t whose x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)
        multiplies the noise prediction's error by at most MAX_X0_GAIN (the cosine schedule's t = T-1 has abar
        2.4e-9: a gain of 20,000, and the first x0_hat is its clipping). Pure noise is then still a close draw of
        x_t (its mean sqrt(abar_t) x0 is at most 1/MAX_X0_GAIN of the image), as in improved-diffusion's spacing."""
        ok = (self.abar >= MAX_X0_GAIN ** -2).nonzero()
        return int(ok.max()) if len(ok) else 0

    @torch.no_grad()
    def ddim(self, n: int, generator: torch.Generator | None = None, steps: int | None = None,
             eta: float | None = None, first: int | None = None) -> Tensor:
        """DDIM sampling on `steps` evenly spaced steps from `first` (default `first_step()`) down to 0: images in
        [0, 1]."""
        steps, eta = steps or self.cfg.sample_steps, self.cfg.eta if eta is None else eta
        first = self.first_step() if first is None else first
        ts = torch.linspace(first, 0, steps).round().long().unique_consecutive().tolist()  # descending
        x = self._noise((n, *self.shape), generator)
        for i, t in enumerate(ts):
            a = self.abar[t]
            a_prev = self.abar[ts[i + 1]] if i + 1 < len(ts) else torch.ones_like(a)
            x0, eps = self._x0(x, t)
            sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
            if eta > 0 and i + 1 < len(ts):
                x = x + sigma * self._noise(x.shape, generator)
        return ((x + 1) / 2).clamp(0, 1)

    def forward(self, x: Tensor) -> Tensor:
        """A plain function for export: the EMA network's noise prediction at the last step (t = T-1)."""
        t = torch.full_like(x[:, 0, 0, 0], self.T - 1, dtype=torch.long)  # (B,), the batch size left dynamic
        return self.ema(x * 2 - 1, t)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, steps: int | None = None) -> Tensor:
        """n images in [0, 1] by DDIM with `steps` steps (default `sample_steps`); steps = T with eta 1 is DDPM."""
        return self.ddim(n, generator, steps)

    @torch.no_grad()
    def analyze(self, classify, seed: int) -> Analysis:
        """The reverse trajectory of 8 samples (ancestral, 11 states from pure noise to the image), the same
        starting noise denoised with each step count of the sweep, and the two schedules' abar_t."""
        states = self.ancestral(8, torch.Generator().manual_seed(seed), keep=10)
        trajectory = torch.stack(states, 1)  # (8, 11, C, H, W)
        by_steps = torch.stack([self.ddim(8, torch.Generator().manual_seed(seed), s) for s in self.cfg.steps_sweep], 1)
        every = max(1, self.T // 100)
        arrays = {"schedule_t": list(range(0, self.T, every)),
                  **{f"abar_{k}": [round(float(v), 6) for v in alpha_bar(k, self.T, self.cfg.beta_start,
                                                                         self.cfg.beta_end)[::every]]
                     for k in ("linear", "cosine")}}
        return Analysis(grids={"trajectory": trajectory, "samples_by_steps": by_steps}, arrays=arrays)
