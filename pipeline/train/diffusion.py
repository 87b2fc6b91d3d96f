"""The diffusion family's one training loop.

Every diffusion model goes through here: one step draws a noise level and noise for each image of the batch
(at the global batch size, then this process's shard, so that several processes train as one would), takes
the model's `loss`, one optimizer step, and moves the EMA network toward the live one. Every other epoch of the
session's grid epochs (and the last) ends with a grid of the EMA network's samples from fixed noise (a grid costs
`sample_steps` network passes an image, so it draws half as many as the other families); at the budget's curve
points the session scores it (FID,
recall and the classes its samples cover), sampling as the study's samples are drawn (DDIM, `sample_steps`).
"""

from __future__ import annotations

import torch

from pipeline.config import ema_decay
from pipeline.models.base import Diffusion
from pipeline.train import distributed
from pipeline.train.common import make_optimizer, update_ema
from pipeline.train.session import Session


def train_diffusion(s: Session, max_steps: int | None = None) -> bool:
    model: Diffusion = s.model  # type: ignore[assignment]
    cfg = s.mcfg
    opt = make_optimizer(cfg.optimizer, model.net.parameters(), cfg.lr)
    loop = s.loop({"opt": opt}, batch_size=cfg.batch_size)
    s.grid_epochs = set(sorted(s.grid_epochs)[1::2]) | {max(s.grid_epochs)}  # half of them, the last kept
    x_train, y_train = s.data.x_train.to(s.device), s.data.y_train.to(s.device)
    shape = (s.cfg.train.grid_size, *s.data.shape)

    def step(x: torch.Tensor, _y: torch.Tensor) -> dict[str, torch.Tensor]:
        n = distributed.global_count(len(x))
        t = distributed.local(torch.randint(0, model.T, (n,), device=x.device))
        noise = distributed.local(torch.randn((n, *x.shape[1:]), device=x.device))
        with s.autocast():
            out = model.loss(x, t, noise)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        distributed.average_gradients(model.net)
        opt.step()
        images = (loop.state.step + 1) * cfg.batch_size  # seen by the end of this step, every process
        update_ema(model.ema, model.net, ema_decay(s.cfg.ema, images, cfg.batch_size))
        return {k: v.detach() for k, v in out.items()}

    def end_epoch(epoch: int) -> dict[str, float]:
        if epoch in s.grid_epochs:  # sampling costs sample_steps passes: only on the epochs that keep a grid
            s.grid(model.sample(shape[0], torch.Generator().manual_seed(s.cfg.seed)), "samples", epoch)
        return {}

    example = x_train[:2]  # what the exported function (the EMA network's noise prediction) takes
    return s.fit(loop, x_train, y_train, step, end_epoch, example, max_steps)
