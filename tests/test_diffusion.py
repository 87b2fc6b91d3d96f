"""The diffusion family: the forward process, the two samplers, the loop's curve and the evaluation's steps sweep."""

from __future__ import annotations

import pytest
import torch

from pipeline import StudyError
from pipeline.models import build
from pipeline.models.ddpm import DDPM, DDPMConfig, alpha_bar


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_forward_process_has_the_right_mean_and_variance_at_both_ends(schedule):
    model = DDPM(DDPMConfig(schedule=schedule, channels=[8, 16], patch=2), (1, 28, 28))
    x0 = torch.linspace(-1, 1, 28 * 28).view(1, 1, 28, 28).expand(4000, 1, 28, 28)
    torch.manual_seed(0)
    for t in (0, model.T - 1):
        steps = torch.full((len(x0),), t, dtype=torch.long)
        xt = model.noised(x0, steps, torch.randn_like(x0))
        a = float(model.abar[t])
        assert torch.allclose(xt.mean(0), a**0.5 * x0[0], atol=0.06)  # E[x_t] = sqrt(abar_t) x_0
        assert abs(float(xt.var(0).mean()) - (1 - a)) < 0.01  # Var[x_t] = 1 - abar_t
    assert float(model.abar[0]) > 0.999 and float(model.abar[-1]) < 1e-3  # almost x_0, then almost pure noise
    assert bool((model.abar[1:] < model.abar[:-1]).all())


def test_schedules_follow_their_papers():
    linear = alpha_bar("linear", 1000)
    assert abs(float(linear[0]) - (1 - 1e-4)) < 1e-12 and float(linear[-1]) == pytest.approx(4.04e-5, rel=0.01)
    cosine = alpha_bar("cosine", 1000)
    s = 0.008
    f = lambda t: torch.cos(torch.tensor((t / 1000 + s) / (1 + s) * torch.pi / 2, dtype=torch.float64)) ** 2
    assert float(cosine[499]) == pytest.approx(float(f(500) / f(0)), rel=1e-9)  # abar_t = f(t) / f(0)
    assert float(cosine[499]) > float(linear[499])  # the cosine schedule destroys information more slowly


def _tiny(eta=0.0, T=40):
    torch.manual_seed(0)
    cfg = DDPMConfig(timesteps=T, channels=[8, 16], patch=2, eta=eta, sample_steps=T, steps_sweep=[T])
    model = DDPM(cfg, (1, 8, 8)).eval()
    for p in model.ema.parameters():  # a network that predicts something: random weights, also in the last layer
        p.data.normal_(0, 0.2)
    return model


def test_ddim_with_eta_one_and_every_step_is_ancestral_sampling():
    model = _tiny()
    ancestral = model.ancestral(64, torch.Generator().manual_seed(3))
    ddim = model.ddim(64, torch.Generator().manual_seed(3), steps=model.T, eta=1.0, first=model.T - 1)
    assert torch.allclose(ancestral, ddim, atol=1e-4)  # the same draws: the same images, not only the same law
    other = model.ddim(64, torch.Generator().manual_seed(4), steps=model.T, eta=1.0, first=model.T - 1)
    assert not torch.allclose(ancestral, other, atol=1e-2)
    deterministic = model.ddim(64, torch.Generator().manual_seed(3), steps=model.T, eta=0.0, first=model.T - 1)
    assert not torch.allclose(ancestral, deterministic, atol=1e-2)


def test_sampling_is_seeded_and_fewer_steps_cost_fewer_passes():
    model = _tiny(T=40)
    calls = []
    model.ema.register_forward_hook(lambda *_: calls.append(1))
    a = model.sample(5, torch.Generator().manual_seed(1), steps=8)
    assert len(calls) == 8 and a.shape == (5, 1, 8, 8) and 0 <= float(a.min()) and float(a.max()) <= 1
    assert torch.equal(a, model.sample(5, torch.Generator().manual_seed(1), steps=8))
    trajectory = model.ancestral(2, torch.Generator().manual_seed(1), keep=4)
    assert len(trajectory) == 5 and len(calls) == 8 + 8 + 40  # T passes, 5 states kept (t = T, ..., 0)
    assert float(trajectory[0].std()) > float(trajectory[-1].std()) * 0.5  # it starts from pure noise


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="sample_steps: 1 to timesteps"):
        DDPMConfig(timesteps=10, sample_steps=20)
    with pytest.raises(ValueError, match="beta_end: above beta_start"):
        DDPMConfig(schedule="linear", beta_start=0.02, beta_end=0.01)
    with pytest.raises(StudyError, match="multiple of patch"):
        build("ddpm", DDPMConfig(channels=[8, 16, 32], patch=2), (1, 28, 28))


def test_evaluation_sweeps_the_sampling_steps(tiny_cfg, tiny_data, tiny_evaluator, tmp_path):
    from pipeline.evaluate.run import evaluate_model
    from pipeline.train.run import train_model
    from pipeline.train.session import TrainPaths

    paths = TrainPaths.for_model("ddpm-42", tmp_path)
    assert train_model("ddpm", tiny_cfg, tiny_data, paths, judge=None)
    metrics = evaluate_model("ddpm", tiny_cfg, tiny_data, paths.model, tiny_evaluator, tmp_path / "m.json", tmp_path / "eval",
                             tmp_path / "figures")
    import json

    arrays = json.loads((tmp_path / "figures" / "arrays.json").read_text())  # what the report draws
    cfg = tiny_cfg.model("ddpm")
    k = len(cfg.steps_sweep)
    assert cfg.eta == 1.0 and arrays["sweep_steps"] == [*cfg.steps_sweep, *cfg.steps_sweep, cfg.timesteps]
    assert arrays["sweep_sampler"] == ["ddim"] * 2 * k + ["ddpm"] and arrays["sweep_eta"] == [0.0] * k + [1.0] * (k + 1)
    timing = json.loads((tmp_path / "eval" / "timing.json").read_text())  # times apart from the metrics
    assert all(v > 0 for v in arrays["sweep_fid"]) and "sample_seconds_per_1000" not in metrics
    assert timing["sweep_seconds_per_1000"][-1] > timing["sweep_seconds_per_1000"][0] > 0
    assert len(arrays["abar_linear"]) == len(arrays["schedule_t"]) == len(arrays["abar_cosine"])
    assert timing["sample_seconds_per_1000"] > 0 and "fid" in metrics and metrics["family"] == "diffusion"
    assert {"trajectory.png", "samples_by_steps.png", "samples.png"} <= {p.name for p in (tmp_path / "figures").iterdir()}
    assert {p.name for p in (tmp_path / "eval").iterdir()} == {"timing.json", "profile.json"}  # the records, in git

    # a tuning grid's cell: only the numbers its choice reads, the same values as the full evaluation's
    scoped = tiny_cfg.model_copy(update={"evaluate": tiny_cfg.evaluate.model_copy(update={"scope": "selection"})})
    cell = evaluate_model("ddpm", scoped, tiny_data, paths.model, tiny_evaluator, tmp_path / "c.json", tmp_path / "c",
                          tmp_path / "c_figures")
    assert {k: cell[k] for k in ("fid", "fid_val", "fid_val_std", "recall", "classes_covered")} == \
        {k: metrics[k] for k in ("fid", "fid_val", "fid_val_std", "recall", "classes_covered")}
    assert "memorization" not in cell and not (tmp_path / "c_figures" / "arrays.json").exists()  # no analyses, no sweep


def test_ddim_starts_where_x0_is_well_conditioned():
    """The cosine schedule's abar at T-1 is 2.4e-9: x0_hat from there is the noise error times 20,000. DDIM starts
    at the last step with 1 / sqrt(abar) <= MAX_X0_GAIN, for every step count."""
    from pipeline.models.ddpm import MAX_X0_GAIN

    model = DDPM(DDPMConfig(schedule="cosine", channels=[8, 16], patch=2), (1, 8, 8)).eval()
    first = model.first_step()
    assert float(1 / model.abar[first].sqrt()) <= MAX_X0_GAIN < float(1 / model.abar[first + 1].sqrt())
    assert first == 966  # T = 1000: improved-diffusion's spacing starts at 950 for 20 steps
    seen = []
    model.ema.register_forward_hook(lambda _m, args, _out: seen.append(int(args[1][0])))
    for steps in (5, 20, 1000):
        seen.clear()
        model.ddim(2, torch.Generator().manual_seed(0), steps=steps)
        assert seen[0] == first and seen[-1] == 0 and seen == sorted(seen, reverse=True)
