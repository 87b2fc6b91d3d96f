"""The evaluator: a small CNN classifier of the study's own data, trained on the train split only.

Its penultimate features (`feature_dim` after a ReLU, the analogue of Inception's pool features) are the
feature space of FID, KID and precision/recall; its predicted labels give class coverage. No Inception weights
can be fetched here, and for MNIST-like data a classifier of the data's own domain is the recommended feature
extractor anyway; the numbers are therefore comparable within this study, not with published Inception FIDs.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from pipeline import StudyError, brief
from pipeline.code import code_hash, command_files
from pipeline.config import EvaluatorConfig, StudyConfig, config_dump
from pipeline.data import Dataset
from pipeline.io import atomic_path, write_json
from pipeline.tracking import NullTracker, run_tags
from pipeline.train.common import batched, fingerprint, resolve_device, seed_everything
from pipeline.train.loop import Loop


class EvaluatorNet(nn.Module):
    def __init__(self, shape: tuple[int, int, int], num_classes: int, width: int = 32, feature_dim: int = 128):
        super().__init__()
        c, h, w = shape

        def block(a: int, b: int) -> list[nn.Module]:
            return [nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]

        self.conv = nn.Sequential(
            *block(c, width), *block(width, width), nn.MaxPool2d(2),  # (B, w, H/2, W/2)
            *block(width, 2 * width), *block(2 * width, 2 * width), nn.MaxPool2d(2),  # (B, 2w, H/4, W/4)
        )
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * (h // 4) * (w // 4), feature_dim), nn.ReLU(True))
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, num_classes))
        self.num_features = feature_dim
        self.channels_last = False  # inputs in the weights' layout (`for_inference`)

    def features(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.embed(self.conv(x))  # (B, feature_dim)

    def for_inference(self) -> "EvaluatorNet":
        """In eval mode for good: each batch norm folded into the convolution before it (its running statistics are
        constants now) and the weights channels-last, the layout CPU convolutions of 32-64 maps run fastest in
        (about twice the images per second). The same function up to float rounding; not for training."""
        layers, modules = [], list(self.conv)
        while modules:
            m = modules.pop(0)
            if isinstance(m, nn.Conv2d) and modules and isinstance(modules[0], nn.BatchNorm2d):
                m = fuse_conv_bn_eval(m, modules.pop(0))
            layers.append(m)
        self.conv, self.channels_last = nn.Sequential(*layers), True
        return self.eval().to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (B, num_classes) logits


def check_range(x: Tensor) -> Tensor:
    """Images for the evaluator must be floats in [0, 1]: 0-255 images (or [-1, 1] ones) would give numbers that
    look like metrics and mean nothing, so they are refused."""
    if not x.is_floating_point():
        raise StudyError(f"evaluator: images must be floats in [0, 1], got dtype {x.dtype}")
    if len(x) and (float(x.min()) < -1e-3 or float(x.max()) > 1 + 1e-3):
        raise StudyError(f"evaluator: images must be in [0, 1], got values in [{float(x.min()):.3g}, {float(x.max()):.3g}]")
    return x


def random_shift(x: Tensor, pixels: float = 2.0) -> Tensor:
    """Translate each image by up to `pixels` in x and y (bilinear, zero padding)."""
    n, _, h, w = x.shape
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, :, 2] = (torch.rand(n, 2).to(x.device) * 2 - 1) * (2 * pixels / torch.tensor([w, h], device=x.device))
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


@torch.no_grad()
def accuracy(net: EvaluatorNet, x: Tensor, y: Tensor) -> float:
    net.eval()
    return float((batched(net, x).argmax(1) == y).float().mean())


def save_evaluator(path: Path, net: EvaluatorNet, cfg: EvaluatorConfig, shape, num_classes: int) -> None:
    with atomic_path(path) as tmp:
        torch.save({"config": config_dump(cfg), "shape": list(shape), "num_classes": num_classes,
                    "state_dict": net.state_dict()}, tmp)


def load_evaluator(path: Path, device: torch.device | str = "cpu") -> EvaluatorNet:
    """The trained evaluator, ready to score images (`EvaluatorNet.for_inference`)."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: no evaluator here (run the 'evaluator' stage first)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        cfg = EvaluatorConfig.model_validate(payload["config"])
        net = EvaluatorNet(tuple(payload["shape"]), payload["num_classes"], cfg.width, cfg.feature_dim)
        net.load_state_dict(payload["state_dict"])
    except Exception as exc:
        raise StudyError(f"{path}: not a readable evaluator file ({brief(exc)})") from None
    return net.eval().for_inference().to(device)


def train_evaluator(cfg: StudyConfig, data: Dataset, model_path: Path, run_dir: Path, checkpoint: Path,
                    tracker=None, root: Path = Path("."), max_steps: int | None = None) -> dict | None:
    """Train the classifier; returns its metrics (test accuracy, ...) or None when stopped by max_steps."""
    tracker = tracker or NullTracker()
    ecfg = cfg.evaluator
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    net = EvaluatorNet(data.shape, data.num_classes, ecfg.width, ecfg.feature_dim).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=ecfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=ecfg.epochs)
    loop = Loop({"net": net, "sched": sched}, {"opt": opt}, epochs=ecfg.epochs, batch_size=ecfg.batch_size,
                seed=cfg.seed, checkpoint=checkpoint, checkpoint_every=cfg.train.checkpoint_every,
                fingerprint=fingerprint("evaluator", config_dump(ecfg), cfg.seed, data.manifest["sha256"],
                                        code_hash(command_files("evaluator"))),  # other code: start over
                desc="evaluator")
    loop.restore()
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)

    def step(x: Tensor, y: Tensor) -> dict[str, float]:
        net.train()
        if ecfg.augment == "shift":
            x = random_shift(x)
        logits = net(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item(), "accuracy": (logits.argmax(1) == y).float().mean().item()}

    def end_epoch(epoch: int) -> dict[str, float]:
        sched.step()
        return {"test_accuracy": accuracy(net, x_test, y_test)}

    stage = "evaluator"
    params = {"seed": cfg.seed, "evaluator": config_dump(ecfg), "data": config_dump(cfg.data)}
    with tracker.run(stage, loop.state.run_id, run_tags(root, stage), params) as run_id:
        loop.state.run_id = run_id
        if not loop.run(x_train, y_train, step, end_epoch, lambda r: tracker.log_metrics(r, r["epoch"]), max_steps):
            return None
        metrics = {"test_accuracy": accuracy(net, x_test, y_test), "train_accuracy": accuracy(net, x_train, y_train),
                   "n_train": len(x_train), "n_test": len(x_test)}
        tracker.log_metrics(metrics)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "history.json", loop.state.history)
        write_json(run_dir / "timing.json", loop.timing())
        save_evaluator(model_path, net, ecfg, data.shape, data.num_classes)
    loop.discard()
    return metrics

