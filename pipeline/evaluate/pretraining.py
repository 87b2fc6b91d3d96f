"""Unsupervised pretraining with few labels: what the lecture means by "can be used for a pre-trained model".

For an autoencoder's encoder, a classifier (encoder -> batch norm -> linear layer to the classes) is trained
with only N labelled train images, N in `evaluate.few_labels`, three ways:
- `frozen`: the pretrained encoder is kept fixed, only the head learns;
- `finetuned`: the pretrained encoder starts the classifier and learns with the head;
- `scratch`: the same architecture from a fresh random initialisation (the baseline pretraining must beat).
Each run takes `evaluate.few_label_steps` Adam steps on batches drawn from its N images and is scored on the
whole test split. The N images are class-balanced and the same for every model.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.config import EvaluateConfig
from pipeline.data import showcase
from pipeline.models.base import Autoencoder, ClosedForm
from pipeline.train.common import batched

MODES = ("frozen", "finetuned", "scratch")


class Classifier(nn.Module):
    def __init__(self, encoder: Autoencoder, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.BatchNorm1d(encoder.code_size), nn.Linear(encoder.code_size, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder.encode(x))  # (B, classes)


def _train(clf: Classifier, x: Tensor, y: Tensor, cfg: EvaluateConfig, seed: int, tune_encoder: bool) -> None:
    clf.encoder.requires_grad_(tune_encoder)
    params = [p for p in clf.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.few_label_lr)
    gen = torch.Generator().manual_seed(seed)
    batch = min(64, len(x))
    clf.train()
    if not tune_encoder:
        clf.encoder.eval()
    for _ in range(cfg.few_label_steps):
        idx = torch.randint(len(x), (batch,), generator=gen).to(x.device)
        loss = F.cross_entropy(clf(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


@torch.no_grad()
def _accuracy(clf: Classifier, x: Tensor, y: Tensor) -> float:
    clf.eval()
    return float((batched(clf, x).argmax(1) == y).float().mean())


def few_label_accuracy(pretrained: Autoencoder, fresh: Autoencoder, x_train: Tensor, y_train: Tensor,
                       x_test: Tensor, y_test: Tensor, num_classes: int, cfg: EvaluateConfig,
                       seed: int) -> dict[str, float]:
    """Test accuracy per mode and label count: keys `few_label_<mode>_<N>` (N = 'all' for every image)."""
    order = showcase(y_train.cpu(), len(y_train)).to(x_train.device)  # class-balanced prefixes
    out: dict[str, float] = {}
    for n in cfg.few_labels:
        count = len(x_train) if n == "all" else min(int(n), len(x_train))
        x, y = x_train[order[:count]], y_train[order[:count]]
        for mode in MODES:
            if mode == "scratch" and isinstance(fresh, ClosedForm):
                continue  # a closed-form model has no random initialisation to start from
            torch.manual_seed(seed)  # the same head initialisation for every mode
            clf = Classifier(copy.deepcopy(fresh if mode == "scratch" else pretrained), num_classes).to(x.device)
            _train(clf, x, y, cfg, seed, tune_encoder=mode != "frozen")
            out[f"few_label_{mode}_{n}"] = _accuracy(clf, x_test, y_test)
    return out
