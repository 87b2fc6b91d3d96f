"""Each GAN mechanism of the lecture, checked on its own."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from pipeline.models.gan import MLPGAN, MLPGANConfig
from pipeline.models.latents import latent_arithmetic
from pipeline.models.progan import (EqualizedConv, EqualizedLinear, ProGAN, ProGANConfig, minibatch_stddev, pixel_norm)
from pipeline.models.stylegan import StyleGAN, StyleGANConfig, StyleLayer
from pipeline.train.common import load_model
from pipeline.train.objectives import OBJECTIVES
from pipeline.train.run import train_model
from pipeline.train.session import TrainPaths

SHAPE = (1, 28, 28)


class LinearCritic(nn.Module):
    """D(x) = <w, x>: its input gradient is w everywhere."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return (x.flatten(1) * self.w).sum(1)


def test_wgan_gp_penalty_and_drift():
    w = torch.full((784,), 0.1)  # ||w|| = 2.8
    d = LinearCritic(w)
    real, fake = torch.rand(8, *SHAPE), torch.rand(8, *SHAPE)
    objective = OBJECTIVES["wgan_gp"](ProGANConfig(penalty_weight=10.0, drift=0.001))
    loss, stats = objective.discriminator_loss(d, real, fake)
    assert float(stats["gp"].detach()) == pytest.approx((math.sqrt(784) * 0.1 - 1) ** 2, rel=1e-5)
    s_real, s_fake = d(real), d(fake)
    expected = s_fake.mean() - s_real.mean() + 10.0 * stats["gp"] + 0.001 * s_real.pow(2).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert float(objective.generator_loss(d, fake)) == pytest.approx(float(-s_fake.mean()), rel=1e-6)


def test_lazy_penalty_every_kth_step_weighted_by_k():
    d = LinearCritic(torch.full((784,), 0.1))
    real, fake = torch.rand(8, *SHAPE), torch.rand(8, *SHAPE)
    lazy = OBJECTIVES["wgan_gp"](ProGANConfig(penalty_every=4))
    every = OBJECTIVES["wgan_gp"](ProGANConfig(penalty_every=1))
    skipped, stats = lazy.discriminator_loss(d, real, fake, step=1)
    assert "gp" not in stats
    full, _ = every.discriminator_loss(d, real, fake, step=1)
    weighted, stats = lazy.discriminator_loss(d, real, fake, step=8)
    assert float(weighted - skipped) == pytest.approx(4 * float(full - skipped), rel=1e-5)


def test_r1_penalises_the_gradient_on_reals():
    d = LinearCritic(torch.full((784,), 0.1))
    objective = OBJECTIVES["nonsaturating_r1"](StyleGANConfig(penalty_weight=2.0))
    _, stats = objective.discriminator_loss(d, torch.rand(4, *SHAPE), torch.rand(4, *SHAPE))
    assert float(stats["r1"]) == pytest.approx(784 * 0.01, rel=1e-5)


def test_pixel_norm_gives_each_pixel_unit_rms():
    out = pixel_norm(torch.randn(2, 16, 5, 5) * 7)
    assert torch.allclose(out.pow(2).mean(1), torch.ones(2, 5, 5), atol=1e-4)


def test_equalized_learning_rate_scales_unit_weights_at_run_time():
    conv = EqualizedConv(32, 8, 3, padding=1, equalized=True)
    assert conv.scale == pytest.approx(math.sqrt(2 / (32 * 9)))
    assert 0.9 < float(conv.weight.std()) < 1.1  # N(0, 1) weights, the He constant applied in forward
    plain = EqualizedConv(32, 8, 3, padding=1, equalized=False)  # the ablation: He init with the layer's gain
    assert plain.scale == 1.0 and float(plain.weight.std()) == pytest.approx(math.sqrt(2 / (32 * 9)), rel=0.1)
    rgb = EqualizedLinear(256, 512, equalized=False, gain=1.0)
    assert float(rgb.weight.std()) == pytest.approx(1 / 16, rel=0.05)
    torch.manual_seed(0)
    x = torch.randn(64, 32, 8, 8)
    on, off = EqualizedConv(32, 8, 3, padding=1), EqualizedConv(32, 8, 3, padding=1, equalized=False)
    assert float(on(x).std()) == pytest.approx(float(off(x).std()), rel=0.15)  # same start, in distribution


def test_progan_grows_and_fades_in():
    cfg = ProGANConfig(growth_share=0.7)  # 7 phases of 10 steps in a budget of 100 steps, then 30 at 32x32
    model = ProGAN(cfg, SHAPE)
    stages = [model.stage(step, 100) for step in (0, 9, 10, 15, 20, 29, 30, 69, 70, 99)]
    assert stages == [(0, 1.0), (0, 1.0), (1, 0.0), (1, 0.5), (1, 1.0), (1, 1.0), (2, 0.0), (3, 1.0), (3, 1.0),
                      (3, 1.0)]
    x = torch.rand(4, *SHAPE) * 2 - 1
    for step, size in ((0, 4), (15, 8), (35, 16), (60, 32)):
        model.advance(step, 100)
        assert model.real_view(x).shape[-1] == size
        assert model.generator(model.latent(4)).shape[-1] == size
        assert model.discriminator(model.real_view(x)).shape == (4,)
    # at alpha 0 the new resolution's output is exactly the old one, upsampled
    model.advance(10, 100)
    assert model.generator.schedule.alpha == 0.0
    z = model.latent(2)
    new = model.generator(z)
    model.generator.schedule.level, model.generator.schedule.alpha = 0, 1.0
    old = torch.nn.functional.interpolate(model.generator(z), scale_factor=2, mode="nearest")
    assert torch.allclose(new, old, atol=1e-6)
    assert ProGAN(cfg.model_copy(update={"growth": "none"}), SHAPE).stage(0, 100) == (3, 1.0)


def test_minibatch_stddev_is_one_statistic_per_group():
    """The paper's layer: std over the group for each feature and location, averaged over both, so every
    location of every image of a group gets the same value; groups are images i, i + B/G, i + 2B/G, ..."""
    from pipeline.models.progan import minibatch_stddev

    x = torch.randn(8, 3, 4, 4)
    out = minibatch_stddev(x, 4)  # 2 groups: images {0, 2, 4, 6} and {1, 3, 5, 7}
    assert out.shape == (8, 4, 4, 4) and torch.equal(out[:, :3], x)
    for members in ([0, 2, 4, 6], [1, 3, 5, 7]):
        expected = torch.sqrt(x[members].var(0, unbiased=False) + 1e-8).mean()
        assert torch.allclose(out[members, 3], expected.expand(4, 4, 4), atol=1e-6)


def test_progan_ablation_switches_change_the_networks():
    full, no_mbstd = ProGAN(ProGANConfig(), SHAPE), ProGAN(ProGANConfig(minibatch_stddev="off"), SHAPE)
    assert full.discriminator.final[0].in_channels == no_mbstd.discriminator.final[0].in_channels + 1
    z = torch.randn(3, 128)
    no_norm = ProGAN(ProGANConfig(pixel_norm="off"), SHAPE)
    assert full.generator.norm and not no_norm.generator.norm
    assert all(m.scale == 1.0 for m in ProGAN(ProGANConfig(equalized_lr="off"), SHAPE).modules()
               if isinstance(m, EqualizedConv))
    assert full(z).shape == (3, *SHAPE)


def test_adain_sets_each_maps_statistics_from_the_style():
    layer = StyleLayer(4, 4, w_dim=6, conv=False)
    w = torch.randn(2, 6)
    out = layer(torch.randn(2, 4, 8, 8) * 5 + 3, w, noise=torch.zeros(2, 1, 8, 8))
    scale, shift = layer.style(w).chunk(2, dim=1)
    assert torch.allclose(out.mean((2, 3)), shift, atol=1e-4)
    assert torch.allclose(out.std((2, 3), unbiased=False), scale.abs(), atol=1e-3)
    assert torch.equal(layer.noise_strength, torch.zeros(4))  # learned, starting at 0


def test_stylegan_constant_input_gets_gradients_on_the_scale_of_the_other_parameters():
    # A flat constant (ones) made the first instance norm divide zeros by sqrt(eps): its gradient, and the first
    # noise strength's, were 10^4 times any other parameter's, and rounding noise set the 4x4 layout.
    torch.manual_seed(0)
    model = StyleGAN(StyleGANConfig(), SHAPE)
    g = model.generator
    (-model.discriminator(g(model.latent(16))).mean()).backward()
    reference = g.synthesis.layers[1].conv.weight.grad.norm()
    assert g.synthesis.const.grad.norm() < 10 * reference
    assert g.synthesis.layers[0].noise_strength.grad.norm() < 10 * reference
    assert g.synthesis.const.std() > 0.5  # a spatial pattern from the start


def test_stylegan_ablations_remove_the_mapping_the_constant_and_the_noise():
    """The lecture's StyleGAN claims, each with its mechanism removed: no mapping network (w is the normalised z),
    no constant input (a learned projection of w starts the synthesis), no noise inputs (one w, one image)."""
    from pipeline.models.progan import pixel_norm

    torch.manual_seed(0)
    full = StyleGAN(StyleGANConfig(), SHAPE)
    no_mapping = StyleGAN(StyleGANConfig(mapping_layers=0), SHAPE)
    z = no_mapping.latent(5)
    assert torch.allclose(no_mapping.generator.map(z), pixel_norm(z[:, :, None, None])[:, :, 0, 0])
    assert len(no_mapping.generator_param_groups(0.002)) == 2  # no mapping group, and no empty one
    no_const = StyleGAN(StyleGANConfig(const_input=False), SHAPE)
    assert not hasattr(no_const.generator.synthesis, "const") and hasattr(full.generator.synthesis, "const")
    no_noise = StyleGAN(StyleGANConfig(noise_inputs=False), SHAPE).eval()
    assert all(layer.noise_strength is None for layer in no_noise.generator.synthesis.layers)
    assert torch.equal(no_noise(z), no_noise(z))  # nothing stochastic left: one w, one image
    for model in (no_mapping, no_const, no_noise):
        assert model(z).shape == (5, *SHAPE)
        model.train()
        (-model.discriminator(model.generator(model.latent(16))).mean()).backward()  # trains: every part gets a gradient
        assert all(p.grad is not None for p in model.generator.parameters())
    count = lambda m: sum(p.numel() for p in m.generator.parameters())  # noqa: E731
    assert count(no_mapping) < count(full) and count(no_noise) < count(full)


def test_stylegan_mixed_samples_take_each_image_s_styles_from_k_latents_in_contiguous_runs():
    """The paper's Table 2 protocol: k latents per image, switched at k - 1 distinct random layers; one latent is
    the plain sample (same draw, same noise)."""
    torch.manual_seed(0)
    model = StyleGAN(StyleGANConfig(), SHAPE).eval()
    layers = model.ema.n_layers
    for k in (1, 2, 4):
        ws = model.mixed_styles(50, k, torch.Generator().manual_seed(3))
        w = model.ema.map(model.latent(50 * k, torch.Generator().manual_seed(3))).view(k, 50, -1)
        assert ws.shape == (50, layers, w.shape[2])
        for i in range(50):
            which = [int((w[:, i] == ws[i, j]).all(1).nonzero()[0]) for j in range(layers)]  # the latent each layer uses
            assert which == sorted(which) and set(which) == set(range(k)), (k, which)  # k contiguous runs, in order
    cuts = {tuple(int(j) for j in (ws[i, 1:] != ws[i, :-1]).any(1).nonzero()) for i in range(50)}
    assert len(cuts) > 10  # the crossover layers differ between images
    torch.manual_seed(5)
    mixed = model.sample_mixed(6, 1, torch.Generator().manual_seed(9))
    torch.manual_seed(5)
    plain = model.sample(6, torch.Generator().manual_seed(9))
    assert torch.equal(mixed, plain)
    with pytest.raises(ValueError, match="latents: 1 to"):
        model.mixed_styles(2, layers + 1, torch.Generator())


def test_stylegan_truncation_mixing_and_mapping_learning_rate():
    cfg = StyleGANConfig()
    model = StyleGAN(cfg, SHAPE).eval()
    g = model.generator
    g.w_avg.normal_()
    ws = g.map(model.latent(4))[:, None].repeat(1, g.n_layers, 1)
    at_mean = model.crop(g.synthesis(g.truncate(ws, 0.0), [torch.zeros(1, 1, h, w) for h, w in g.synthesis.noise_shapes()]))
    assert torch.allclose(at_mean, at_mean[:1].expand_as(at_mean), atol=1e-5)  # psi = 0: every sample is the mean w's
    cfg = StyleGANConfig(plain_lr_scale=0.1)
    model = StyleGAN(cfg, SHAPE)
    g = model.generator
    equalized, plain, mapping = model.generator_param_groups(0.002)
    assert mapping["lr"] == pytest.approx(0.002 * cfg.mapping_lr_scale)
    assert {id(p) for p in mapping["params"]} == {id(p) for p in g.mapping.parameters()}
    assert equalized["lr"] == 0.002 and plain["lr"] == pytest.approx(0.0002)  # constant, noise strengths, biases
    assert any(p is g.synthesis.const for p in plain["params"])
    assert any(p is g.synthesis.layers[1].conv.weight for p in equalized["params"])
    every = [p for group in (equalized, plain, mapping) for p in group["params"]]
    assert len(every) == len({id(p) for p in every}) == len(list(g.parameters()))  # each parameter in one group
    g.train()
    torch.manual_seed(0)
    mixed = g.synthesis.layers[0].style.weight.new_tensor(0)  # noqa: F841 (forward in training mode mixes styles)
    calls = []
    original = g.map
    g.map = lambda z: calls.append(len(z)) or original(z)  # type: ignore[method-assign]
    cfg_always = cfg.model_copy(update={"mixing_prob": 1.0})
    g.cfg = cfg_always
    g(model.latent(3))
    assert calls == [3, 3]  # two latents mapped: style mixing


def test_latent_arithmetic_reports_ink_and_class_interpolation():
    model = MLPGAN(MLPGANConfig(), SHAPE).eval()
    analysis = latent_arithmetic(model, lambda x: (x.flatten(1).mean(1) * 1000).long() % 10, seed=0, n=400)
    assert set(analysis.metrics) == {"ink_vector_ink_gain", "ink_vector_class_kept", "class_mean_latents_recognised"}
    assert analysis.grids["ink_arithmetic"].shape[1:3] == (5, 1)
    assert analysis.grids["class_interpolation"].shape[1] == 9
    collapsed = latent_arithmetic(model, lambda x: torch.zeros(len(x), dtype=torch.long), seed=0, n=400)
    assert "class_interpolation" not in collapsed.grids  # one class: nothing to walk between, no empty grid
    assert collapsed.metrics["class_mean_latents_recognised"] == 1.0


@pytest.mark.parametrize("name", ["progan", "stylegan"])
def test_gan_loop_resumes_mid_schedule_and_records_the_curve(name, tiny_cfg, tiny_data, tiny_evaluator, tmp_path):
    from pipeline.evaluate.metrics import judge_for

    judge = judge_for(tiny_evaluator, tiny_data, tiny_cfg.evaluate, tiny_cfg.seed, "cpu")
    straight = TrainPaths.for_model(name, tmp_path / "a")
    assert train_model(name, tiny_cfg, tiny_data, straight, judge=judge)
    broken = TrainPaths.for_model(name, tmp_path / "b")
    assert not train_model(name, tiny_cfg, tiny_data, broken, max_steps=19, judge=judge)  # mid-fade for progan
    assert train_model(name, tiny_cfg, tiny_data, broken, judge=judge)
    a, b = (torch.load(p.model, weights_only=True)["state_dict"] for p in (straight, broken))
    assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))
    curve = json.loads((straight.run_dir / "curve.json").read_text())
    timeless = lambda c: [{k: v for k, v in point.items() if k != "seconds"} for point in c]  # noqa: E731
    assert timeless(curve) == timeless(json.loads((broken.run_dir / "curve.json").read_text()))  # measured the same
    budget = tiny_cfg.budget
    assert len(curve) == budget.curve_points and curve[-1]["images"] == budget.images
    assert all(0 <= p["classes_covered"] <= 10 and p["class_kl"] >= 0 and p["fid"] > 0 and 0 <= p["recall"] <= 1
               for p in curve)
    assert [p["seconds"] for p in curve] == sorted(p["seconds"] for p in curve)
    timing = json.loads((straight.run_dir / "timing.json").read_text())
    assert timing["images_seen"] == budget.images
    if name == "progan":
        history = json.loads((straight.run_dir / "history.json").read_text())
        assert [r["resolution"] for r in history][-1] == 32.0
        model, _ = load_model(straight.model)
        assert model.generator.schedule.level == 3 and model.generator.schedule.alpha == 1.0


def test_mode_collapse_verdicts_name_the_budget_points():
    from pipeline.report.sections import _classes, _point_ranges

    points = [{"images": i * 6400} for i in (1, 2, 3, 7, 9, 10)]
    assert _point_ranges(points, 64000) == "at 10–30, 70, 90–100 % of the budget"
    assert _point_ranges([{"images": 25600}], 64000) == "at 40 % of the budget"
    assert (_classes(1), _classes(7)) == ("1 class", "7 classes")


def test_stylegan_samples_do_not_depend_on_the_global_rng():
    from pipeline.evaluate.metrics import draw

    model = StyleGAN(StyleGANConfig(channels=[16, 8, 8, 8], d_channels=[16, 8, 8, 8]), SHAPE).eval()
    with torch.no_grad():
        for layer in model.ema.synthesis.layers:
            layer.noise_strength.fill_(1.0)  # make the noise inputs visible in the images
    torch.manual_seed(1)
    a = draw(model, 6, seed=3)
    torch.manual_seed(2)
    b = draw(model, 6, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, draw(model, 6, seed=4))
