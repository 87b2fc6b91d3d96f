"""What every training loop shares: seeding, device choice, optimizers, grids, model files."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from pipeline import StudyError, brief
from pipeline.io import atomic_path


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    deterministic_algorithms()
    torch.backends.cudnn.benchmark = False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS


def deterministic_algorithms() -> None:
    """`torch.use_deterministic_algorithms(True, warn_only=True)` without its import of torch._inductor.config, which
    pulls in torch._dynamo (over a second of every stage's start-up) only to set the compiler's flag; the
    study compiles nothing. Falls back to the public call where torch lacks the setter."""
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        setter(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise StudyError("device: 'cuda' requested but no CUDA device is available (use 'auto' or 'cpu')")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def make_optimizer(name: str, params: Iterable[nn.Parameter], lr: float, betas=(0.9, 0.999)) -> torch.optim.Optimizer:
    params = list(params)  # foreach: one fused call per kind of update instead of one per tensor (CPU too)
    if name == "nadam":
        return torch.optim.NAdam(params, lr=lr, betas=betas, foreach=True)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, foreach=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, foreach=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, foreach=True)
    raise StudyError(f"unknown optimizer '{name}'; allowed: nadam, adam, rmsprop, sgd")


@torch.no_grad()
def update_ema(ema: nn.Module, live: nn.Module, decay: float) -> None:
    """ema <- decay x ema + (1 - decay) x live (`pipeline.config.ema_decay` gives the decay of a step); buffers
    are copied."""
    torch._foreach_lerp_(list(ema.parameters()), list(live.parameters()), 1 - decay)  # one fused call
    buffers = list(ema.buffers())
    if buffers:
        torch._foreach_copy_(buffers, list(live.buffers()))


def fingerprint(*parts: Any) -> str:
    """A hash of everything that must match for a checkpoint to be resumed."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def grid(images: Tensor, nrow: int = 8) -> Tensor:
    """One image of a batch (N, C, H, W), nrow to a row, or of a table (rows, cols, C, H, W)."""
    if images.dim() == 5:
        nrow = images.shape[1]
        images = images.flatten(0, 1)
    images, pad = images.detach().clamp(0, 1).cpu(), 2
    n, c, h, w = images.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    out = torch.ones(c, rows * (h + pad) + pad, cols * (w + pad) + pad)  # white lines between the images
    for i, image in enumerate(images):
        top, left = pad + (i // cols) * (h + pad), pad + (i % cols) * (w + pad)
        out[:, top:top + h, left:left + w] = image
    return out  # (C, H', W')


def save_grid(image: Tensor, path: Path) -> None:
    """A grid as an 8-bit PNG (grey for one channel, RGB for three)."""
    from PIL import Image

    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()  # (H, W, C)
    with atomic_path(path) as tmp:
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(tmp, format="png")


def count_params(module: nn.Module) -> int:
    """Every weight the module uses (PCA's fitted components included, an EMA copy excluded by the caller)."""
    return sum(p.numel() for p in module.parameters())


def save_model(path: Path, name: str, family: str, cfg: dict, shape, model: nn.Module, extra: dict) -> None:
    """A trained model file: everything needed to rebuild it through the registry, weights only."""
    payload = {"name": name, "family": family, "config": cfg, "shape": list(shape),
               "state_dict": model.state_dict(), "extra": extra}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    from pipeline.models import spec

    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: no such model file (run its training stage first)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        entry = spec(payload["name"])
        cfg = entry.config.model_validate(payload["config"])
        model = entry.build(cfg, tuple(payload["shape"]))
        model.load_state_dict(payload["state_dict"])
    except StudyError:
        raise
    except Exception as exc:  # pickle errors, missing keys, shape mismatches
        raise StudyError(f"{path}: not a readable model file of this study ({brief(exc)})") from None
    return model.to(device), payload


def interleave_rows(top: Tensor, bottom: Tensor, nrow: int = 8) -> Tensor:
    """Rows of `top` images, each followed by the matching row of `bottom` (originals over reconstructions)."""
    rows = [t for pair in zip(top.split(nrow), bottom.split(nrow)) for t in pair]
    return torch.cat(rows)  # (2N, C, H, W)


@torch.no_grad()
def batched(fn, x: Tensor, batch_size: int = 500) -> Tensor:
    return torch.cat([fn(chunk) for chunk in x.split(batch_size)])
