"""GAN objectives: what the discriminator and the generator each minimise. Named in each GAN's config.

- `nonsaturating`: Goodfellow et al. 2014, the binary cross-entropy GAN of the book. D minimises
  -log D(x) - log(1 - D(G(z))); G minimises -log D(G(z)) (the non-saturating form, strong gradients early on).
  With logits l, -log sigmoid(l) = softplus(-l) and -log(1 - sigmoid(l)) = softplus(l).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class NonSaturating:
    def discriminator_loss(self, d: nn.Module, real: Tensor, fake: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        logit_real, logit_fake = d(real), d(fake)  # (B,) each
        loss = F.softplus(-logit_real).mean() + F.softplus(logit_fake).mean()
        return loss, {"d_real": torch.sigmoid(logit_real).mean(), "d_fake": torch.sigmoid(logit_fake).mean()}

    def generator_loss(self, d: nn.Module, fake: Tensor) -> Tensor:
        return F.softplus(-d(fake)).mean()


OBJECTIVES = {"nonsaturating": NonSaturating}
