"""The GAN family's one training loop.

Every GAN goes through here: the model supplies generator, discriminator and latent size; its config names
the objective (`pipeline.train.objectives`). One step = one discriminator update on a real batch and a fake
batch, then one generator update on the same fakes, then the EMA generator moves toward the live one. Each
epoch ends with a grid of the EMA generator's images from fixed latents; at the budget's curve points the
session scores the EMA generator (FID, recall and the classes its samples cover: mode collapse, watched as it
happens). Before every step the model may advance
a schedule (ProGAN's growth), and the real batch is shown as the model wants it now (`real_view`: padded,
downsampled, faded). After the last epoch the EMA
generator's batch-norm statistics are re-estimated under its own weights (they were copied from the live
generator during training).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from pipeline.config import ema_decay
from pipeline.models.base import GAN
from pipeline.train import distributed
from pipeline.train.common import make_optimizer, update_ema
from pipeline.train.objectives import OBJECTIVES
from pipeline.train.session import Session


@torch.no_grad()
def recalibrate_batchnorm(model: GAN, batches: int = 40, batch_size: int = 128) -> None:
    norms = [m for m in model.ema.modules() if isinstance(m, _BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches below
    model.ema.train()
    for _ in range(batches):
        model.ema(model.latent(batch_size))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.ema.eval()


def train_gan(s: Session, max_steps: int | None = None) -> bool:
    model: GAN = s.model  # type: ignore[assignment]
    cfg = s.mcfg
    # channels-last activations: CPU convolutions with few channels at 32x32 (ProGAN's, StyleGAN's) run 2-3x
    # faster in that layout (oneDNN)
    model.to(memory_format=torch.channels_last)
    objective = OBJECTIVES[cfg.objective](cfg)
    betas = (cfg.beta1, cfg.beta2)
    opt_g = make_optimizer(cfg.optimizer, model.generator_param_groups(cfg.lr_g), cfg.lr_g, betas)
    opt_d = make_optimizer(cfg.optimizer, model.discriminator.parameters(), cfg.lr_d, betas)
    loop = s.loop({"g": opt_g, "d": opt_d}, batch_size=cfg.batch_size)
    x_train = s.data.x_train.to(s.device) * 2 - 1  # the generator's tanh range, [-1, 1]
    y_train = s.data.y_train.to(s.device)
    total_steps = loop.total_steps(len(x_train))
    fixed_z = model.latent(s.cfg.train.grid_size, torch.Generator().manual_seed(s.cfg.seed))
    schedule: dict[str, float] = {}

    def step(real: torch.Tensor, _y: torch.Tensor) -> dict[str, torch.Tensor]:
        schedule.update(model.advance(loop.state.step, total_steps))  # e.g. ProGAN's resolution and alpha
        real = model.real_view(real)
        z = distributed.local(model.latent(distributed.global_count(len(real))))  # this shard of the global latents
        with s.autocast():
            fake = model.generator(z)
            d_loss, stats = objective.discriminator_loss(model.discriminator, real, fake.detach(), loop.state.step)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        distributed.average_gradients(model.discriminator)  # penalties included
        opt_d.step()
        model.discriminator.requires_grad_(False)  # the generator's step needs no discriminator gradients
        with s.autocast():
            g_loss = objective.generator_loss(model.discriminator, fake)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        distributed.average_gradients(model.generator)
        opt_g.step()
        model.discriminator.requires_grad_(True)
        images = (loop.state.step + 1) * cfg.batch_size  # seen by the end of this step, every process
        update_ema(model.ema, model.generator, ema_decay(s.cfg.ema, images, cfg.batch_size))
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), **{k: v.detach() for k, v in stats.items()}}

    def end_epoch(epoch: int) -> dict[str, float]:
        model.ema.eval()
        row: dict[str, float] = dict(schedule)
        with torch.no_grad():
            s.grid(model(fixed_z), "samples", epoch)
        return row

    def before_finish() -> None:
        recalibrate_batchnorm(model)
        with torch.no_grad():
            s.grid(model(fixed_z), "samples", loop.state.epoch)  # the final grid, with recalibrated statistics

    def phase(step: int) -> str:  # what a step's FLOPs depend on: the model's schedule and the penalty's turn
        return " ".join(p for p in (model.phase(step, total_steps), objective.phase(step)) if p)

    return s.fit(loop, x_train, y_train, step, end_epoch, fixed_z[:2], max_steps, before_finish, phase=phase)
