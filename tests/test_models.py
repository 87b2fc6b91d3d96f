"""One suite over the whole registry: build, shapes, finite loss, one step moves the weights, save/load."""

from __future__ import annotations

import pytest
import torch

from pipeline import StudyError
from pipeline.models import MODELS, build
from pipeline.models.base import GAN, Autoencoder, ClosedForm, Diffusion, Generative
from pipeline.train.common import load_model, save_model, seed_everything
from pipeline.train.objectives import OBJECTIVES
from pipeline.train.run import train_model
from pipeline.train.session import TrainPaths

NAMES = list(MODELS)


def _model(name, cfg, data):
    seed_everything(cfg.seed)
    return build(name, cfg.model(name), data.shape)


@pytest.mark.parametrize("name", NAMES)
def test_builds_with_the_right_shapes_and_a_finite_loss(name, tiny_cfg, tiny_data):
    model = _model(name, tiny_cfg, tiny_data)
    x = tiny_data.x_train[:8]
    if isinstance(model, Autoencoder):
        if isinstance(model, ClosedForm):
            model.fit(tiny_data.x_train)
        z = model.encode(x)
        assert z.shape == (8, model.code_size)
        assert model.decode(z).shape == x.shape
        losses = model.loss(x)
        assert "loss" in losses and all(torch.isfinite(v) for v in losses.values())
        r = model.reconstruct(x)
        assert r.shape == x.shape and float(r.min()) >= 0 and float(r.max()) <= 1
    if isinstance(model, GAN):
        z = model.latent(8)
        fake = model.generator(z)  # at the model's working size (ProGAN, StyleGAN: padded to 32x32)
        assert model.crop(fake).shape == x.shape
        real = model.real_view(x * 2 - 1)
        assert real.shape == fake.shape and model.discriminator(real).shape == (8,)
        objective = OBJECTIVES[tiny_cfg.model(name).objective](tiny_cfg.model(name))
        d_loss, _ = objective.discriminator_loss(model.discriminator, real, fake.detach())
        assert torch.isfinite(d_loss) and torch.isfinite(objective.generator_loss(model.discriminator, fake))
    if isinstance(model, Diffusion):
        losses = model.loss(x)
        assert "loss" in losses and all(torch.isfinite(v) for v in losses.values())
    if isinstance(model, Generative):
        samples = model.sample(5, torch.Generator().manual_seed(0))
        assert samples.shape == (5, *x.shape[1:]) and float(samples.min()) >= 0 and float(samples.max()) <= 1


@pytest.mark.parametrize("name", NAMES)
def test_one_training_step_moves_every_weight_its_loss_reaches(name, tiny_cfg, tiny_data, tmp_path):
    fresh = _model(name, tiny_cfg, tiny_data)  # the same initial weights the loop starts from
    paths = TrainPaths.for_model(name, tmp_path)
    done = train_model(name, tiny_cfg, tiny_data, paths, max_steps=1)
    if isinstance(fresh, ClosedForm):
        assert done  # fitted in one shot
        trained, _ = load_model(paths.model)
        assert not torch.equal(trained.components, fresh.components)
        return
    assert not done and paths.checkpoint.is_file() and not paths.model.exists()
    state = torch.load(paths.checkpoint, weights_only=True)["modules"]["model"]
    # the weights the first step's loss has gradients for (a greedy model's first phase reaches one layer)
    probe = _model(name, tiny_cfg, tiny_data)
    x = tiny_data.x_train[:8]
    if isinstance(probe, Autoencoder):
        probe.start_epoch(1)
        probe.loss(x)["loss"].backward()
    elif isinstance(probe, Diffusion):
        probe.loss(x)["loss"].backward()
    else:  # a growing GAN's first step reaches only its 4x4 layers
        probe.advance(0, 12)
        objective = OBJECTIVES[tiny_cfg.model(name).objective](tiny_cfg.model(name))
        fake = probe.generator(probe.latent(8))
        objective.discriminator_loss(probe.discriminator, probe.real_view(x * 2 - 1), fake.detach())[0].backward()
        objective.generator_loss(probe.discriminator, fake).backward()
    reached = {k for k, p in probe.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert reached
    moved = {k for k, p in fresh.named_parameters() if not torch.equal(state[k], p.detach())}
    assert reached <= moved
    frozen = {k for k, p in fresh.named_parameters() if not p.requires_grad}
    if isinstance(fresh, (GAN, Diffusion)):
        assert any(k.startswith("ema.") for k in moved)  # the EMA network follows the live one
        frozen = {k for k in frozen if not k.startswith("ema.")}
    assert not moved & frozen


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name, tiny_cfg, tiny_data, tmp_path):
    model = _model(name, tiny_cfg, tiny_data)
    if isinstance(model, ClosedForm):
        model.fit(tiny_data.x_train)
    model.eval()
    save_model(tmp_path / "m.pt", name, MODELS[name].family, tiny_cfg.model(name).model_dump(), tiny_data.shape,
               model, {})
    loaded, payload = load_model(tmp_path / "m.pt")
    loaded.eval()
    assert payload["name"] == name and type(loaded) is type(model)
    if isinstance(model, Autoencoder):
        x = tiny_data.x_test[:4]
        assert torch.equal(model.reconstruct(x), loaded.reconstruct(x))
    if isinstance(model, GAN):
        z = model.latent(4, torch.Generator().manual_seed(0))
        assert torch.equal(model(z), loaded(z))
    if isinstance(model, Diffusion):
        assert torch.equal(model.sample(4, torch.Generator().manual_seed(0)), loaded.sample(4, torch.Generator().manual_seed(0)))


def test_unreadable_model_files_are_refused(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(StudyError, match="not a readable model file"):
        load_model(tmp_path / "junk.pt")
    torch.save({"name": "nope", "config": {}, "shape": [1, 28, 28], "state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(StudyError, match="unknown model 'nope'"):
        load_model(tmp_path / "other.pt")
    with pytest.raises(StudyError, match="no such model file"):
        load_model(tmp_path / "absent.pt")


def test_dcgan_follows_radford_guidelines(tiny_cfg, tiny_data):
    from torch import nn

    model = _model("dcgan", tiny_cfg, tiny_data)
    g, d = list(model.generator.modules()), list(model.discriminator.modules())
    assert not any(isinstance(m, (nn.Linear, nn.MaxPool2d, nn.AvgPool2d)) for m in g + d)
    g_layers = [m for m in g if isinstance(m, (nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU, nn.Tanh))]
    assert isinstance(g_layers[-1], nn.Tanh) and isinstance(g_layers[-2], nn.ConvTranspose2d)  # no BN at output
    d_convs = [m for m in d if isinstance(m, nn.Conv2d)]
    assert all(c.stride == (2, 2) for c in d_convs[:-1])  # strided convolutions instead of pooling
    first = list(model.discriminator.net)
    assert isinstance(first[0], nn.Conv2d) and isinstance(first[1], nn.LeakyReLU)  # no BN at the input
    assert any(isinstance(m, nn.BatchNorm2d) for m in d) and any(isinstance(m, nn.BatchNorm2d) for m in g)


def test_dcgan_rejects_an_image_size_it_cannot_reach(tiny_cfg):
    with pytest.raises(StudyError, match="multiple of 2\\*\\*upsamplings"):
        build("dcgan", tiny_cfg.model("dcgan"), (1, 30, 30))


@pytest.mark.parametrize("name", NAMES)
def test_forward_exports_with_a_dynamic_batch(name, tiny_cfg, tiny_data):
    """What MLflow logs (torch.export, pt2): the model's forward must not fix the batch size."""
    model = _model(name, tiny_cfg, tiny_data).eval()
    example = model.latent(2) if isinstance(model, GAN) else tiny_data.x_test[:2]
    exported = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    bigger = model.latent(5) if isinstance(model, GAN) else tiny_data.x_test[:5]
    torch.manual_seed(1)  # StyleGAN draws its noise inputs: the same draws for both
    served = exported.module()(bigger)
    torch.manual_seed(1)
    assert torch.allclose(served, model(bigger), atol=1e-5)
