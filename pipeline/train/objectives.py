"""GAN objectives: what the discriminator and the generator each minimise. Named in each GAN's config.

- `nonsaturating`: Goodfellow et al. 2014, the binary cross-entropy GAN of the book. D minimises
  -log D(x) - log(1 - D(G(z))); G minimises -log D(G(z)) (the non-saturating form, strong gradients early on).
  With logits l, -log sigmoid(l) = softplus(-l) and -log(1 - sigmoid(l)) = softplus(l).
- `nonsaturating_r1`: the same plus the R1 penalty gamma/2 * E ||grad_x D(x)||^2 on real images (Mescheder et
  al. 2018), the regulariser of StyleGAN's FFHQ runs.
- `wgan_gp`: Wasserstein loss with gradient penalty (Gulrajani et al. 2017) and ProGAN's drift term:
  D minimises D(G(z)) - D(x) + lambda * (||grad D(x_hat)|| - 1)^2 + eps_drift * D(x)^2, x_hat a random mix of a
  real and a fake image; G minimises -D(G(z)). D's outputs are scores, not probabilities.

Both penalties can be lazy (StyleGAN2, Karras et al. 2020): with `penalty_every` k > 1 the penalty is computed
on every k-th step only, weighted by k, which keeps its average strength at a fraction of the cost (the double
backward pass through the discriminator is most of a CPU step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.base import GANTraining
from pipeline.train import distributed


def _input_gradient(d: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """D(x) and dD/dx, keeping the graph so that a penalty on the gradient can be trained."""
    x = x.detach().requires_grad_(True)
    out = d(x)
    grad, = torch.autograd.grad(out.sum(), x, create_graph=True)
    return out, grad.flatten(1)  # (B,), (B, C*H*W)


class Objective:
    penalized = False  # whether the discriminator's loss has a penalty, computed every `penalty_every` steps

    def __init__(self, cfg: GANTraining):
        self.cfg = cfg

    def phase(self, step: int) -> str:
        """'penalty' on the steps that compute the penalty (they cost more): the loop counts FLOPs per phase."""
        return "penalty" if self.penalized and step % self.cfg.penalty_every == 0 else ""


class NonSaturating(Objective):
    def discriminator_loss(self, d: nn.Module, real: Tensor, fake: Tensor, step: int = 0) -> tuple[Tensor, dict[str, Tensor]]:
        logit_real, logit_fake = d(real), d(fake)  # (B,) each
        loss = F.softplus(-logit_real).mean() + F.softplus(logit_fake).mean()
        return loss, {"d_real": torch.sigmoid(logit_real).mean(), "d_fake": torch.sigmoid(logit_fake).mean()}

    def generator_loss(self, d: nn.Module, fake: Tensor) -> Tensor:
        return F.softplus(-d(fake)).mean()


class NonSaturatingR1(NonSaturating):
    penalized = True

    def discriminator_loss(self, d: nn.Module, real: Tensor, fake: Tensor, step: int = 0) -> tuple[Tensor, dict[str, Tensor]]:
        loss, stats = super().discriminator_loss(d, real, fake, step)
        k = self.cfg.penalty_every
        if step % k == 0:
            _, grad = _input_gradient(d, real)
            r1 = grad.pow(2).sum(1).mean()
            loss = loss + k * self.cfg.penalty_weight / 2 * r1
            stats["r1"] = r1
        return loss, stats


class WGANGP(Objective):
    penalized = True

    def discriminator_loss(self, d: nn.Module, real: Tensor, fake: Tensor, step: int = 0) -> tuple[Tensor, dict[str, Tensor]]:
        score_real, score_fake = d(real), d(fake)
        loss = score_fake.mean() - score_real.mean() + self.cfg.drift * score_real.pow(2).mean()
        stats = {"d_real": score_real.mean(), "d_fake": score_fake.mean()}
        k = self.cfg.penalty_every
        if step % k == 0:
            eps = distributed.local(torch.rand(distributed.global_count(len(real)), 1, 1, 1, device=real.device))
            _, grad = _input_gradient(d, eps * real + (1 - eps) * fake)
            gp = (grad.norm(dim=1) - 1).pow(2).mean()
            loss = loss + k * self.cfg.penalty_weight * gp
            stats["gp"] = gp
        return loss, stats

    def generator_loss(self, d: nn.Module, fake: Tensor) -> Tensor:
        return -d(fake).mean()


OBJECTIVES = {"nonsaturating": NonSaturating, "nonsaturating_r1": NonSaturatingR1, "wgan_gp": WGANGP}
