"""Z against W: perceptual path length and linear separability on generators whose answers are known."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline.evaluate.paths import latent_metrics, lerp, path_length, separability, slerp
from pipeline.models.base import LatentSpace


def _linear(a: torch.Tensor, noise: float = 0.0) -> LatentSpace:
    """A generator that is a linear map (plus noise of its own, drawn from the global stream, like StyleGAN's)."""
    def images(x):
        out = x @ a.T.to(x.dtype)
        return out + noise * torch.randn(out.shape, dtype=out.dtype) if noise else out
    return LatentSpace(lambda n, g: torch.randn(n, a.shape[1], generator=g), "lerp", images)


def test_slerp_keeps_its_ends_and_the_angle_and_lerps_the_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 8, generator=g, dtype=torch.float64), torch.randn(5, 8, generator=g, dtype=torch.float64)
    assert torch.allclose(slerp(a, b, torch.zeros(5, dtype=torch.float64)), a)
    assert torch.allclose(slerp(a, b, torch.ones(5, dtype=torch.float64)), b)
    mid = slerp(a, b, torch.full((5,), 0.5, dtype=torch.float64))
    angle = lambda u, v: torch.acos((u * v).sum(1) / (u.norm(dim=1) * v.norm(dim=1)))  # noqa: E731
    assert torch.allclose(angle(a, mid), angle(mid, b)) and torch.allclose(angle(a, mid) * 2, angle(a, b))
    assert torch.allclose(mid.norm(dim=1), (a.norm(dim=1) + b.norm(dim=1)) / 2)
    assert torch.allclose(lerp(a, b, torch.full((5,), 0.25, dtype=torch.float64)), a + 0.25 * (b - a))


def test_path_length_of_a_linear_generator_is_known():
    """images = A z with lerp: |d/dt A z(t)|² = |A (b - a)|² wherever t lies, so full and end sampling agree
    and the mean is about E|A(b - a)|² = 2 ||A||_F² (a little less after trimming the top percentile); doubling A
    multiplies it by four; noise inputs fixed per pair cancel."""
    a = torch.randn(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ident = lambda x: x  # noqa: E731  (features: the images themselves)
    full = path_length(_linear(a), ident, 2000, "full", 3)
    end = path_length(_linear(a), ident, 2000, "end", 3)
    assert full == pytest.approx(end, rel=1e-6)
    assert 0.85 * 2 * float((a ** 2).sum()) < full < 1.02 * 2 * float((a ** 2).sum())
    assert path_length(_linear(2 * a), ident, 2000, "full", 3) == pytest.approx(4 * full, rel=1e-6)
    assert path_length(_linear(a, noise=0.3), ident, 2000, "full", 3) == pytest.approx(full, rel=1e-6)


def test_path_length_is_the_limit_of_the_papers_difference_quotient():
    """On a smooth nonlinear generator (tanh of a linear map, slerp in z) the derivative computed in float32 agrees
    with the paper's d(t, t + eps) / eps² computed in float64 at eps = 1e-4, pair by pair through the trimmed mean."""
    a = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    space = LatentSpace(lambda n, g: torch.randn(n, 4, generator=g), "slerp", lambda z: torch.tanh(z @ a.T.to(z.dtype)))
    got = path_length(space, lambda x: x, 250, "full", 7)  # one chunk: its two draws are the ends
    g, tg = torch.Generator().manual_seed(7), torch.Generator().manual_seed(8)  # the pairs path_length draws
    z0, z1 = space.draw(250, g).double(), space.draw(250, g).double()
    t, eps = torch.rand(250, generator=tg).double(), 1e-4
    quotient = ((space.images(slerp(z0, z1, t + eps)) - space.images(slerp(z0, z1, t))) ** 2).sum(1) / eps ** 2
    values = quotient.numpy()
    low, high = np.percentile(values, 1, method="lower"), np.percentile(values, 99, method="higher")
    assert got == pytest.approx(float(values[(values >= low) & (values <= high)].mean()), rel=1e-3)


def _labeller(rule):
    """An evaluator stand-in whose features are the images and whose head scores two classes by `rule`."""
    def head(f):
        yes = rule(f).double()
        return torch.stack([yes, 1 - yes], 1) * 10
    return SimpleNamespace(eval=lambda: None, features=lambda x: x, head=head)


def test_separability_is_one_for_a_linear_class_and_larger_for_a_curved_one():
    space = LatentSpace(lambda n, g: torch.randn(n, 3, generator=g), "slerp", lambda z: z)
    linear = separability(space, _labeller(lambda f: f[:, 0] + f[:, 1] > 0), 2000, 2, 0)
    curved = separability(space, _labeller(lambda f: f[:, 0].abs() > 0.8), 2000, 2, 0)
    assert linear == pytest.approx(1.0, abs=0.05)  # H(Y | X) about 0: one hyperplane explains the class
    assert curved > 1.3 and math.isfinite(curved)


def test_a_stylegan_reports_both_spaces(tiny_cfg, tiny_data, tiny_evaluator):
    from pipeline.models import build

    torch.manual_seed(0)
    model = build("stylegan", tiny_cfg.model("stylegan"), tiny_data.shape)
    cfg = tiny_cfg.evaluate.model_copy(update={"ppl_pairs": 40, "separability_samples": 200})
    out = latent_metrics(model, tiny_evaluator, cfg, 10, 5)
    assert set(out) == {"ppl_z_full", "ppl_z_end", "ppl_w_full", "ppl_w_end", "separability_z", "separability_w"}
    assert all(np.isfinite(v) and v >= 0 for v in out.values()) and out["separability_w"] >= 1 - 1e-9
    assert latent_metrics(model, tiny_evaluator, cfg, 10, 5) == out  # seeded
