"""What each autoencoder is for, checked on its own mechanism."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.config import parse_config
from pipeline.data import Dataset
from pipeline.evaluate.metrics import pca_mse, tsne_map
from pipeline.evaluate.pretraining import few_label_accuracy
from pipeline.models import build
from pipeline.models.denoising import Denoising, DenoisingConfig
from pipeline.models.greedy import Greedy, GreedyConfig
from pipeline.models.sparse import Sparse, SparseConfig, kl_divergence
from pipeline.models.stacked import Stacked, StackedConfig
from pipeline.models.tied import Tied, TiedConfig
from pipeline.models.vae import VAE, VAEConfig
from pipeline.train.common import load_model, seed_everything
from pipeline.train.run import train_model
from pipeline.train.session import TrainPaths

SHAPE = (1, 28, 28)


def _low_rank_dataset(n_train=1200, n_test=300, rank=4, seed=0) -> Dataset:
    """8x8 'images' on a rank-4 subspace (well separated variances) plus a little isotropic noise."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(64, rank, generator=g))[0]  # (64, rank), orthonormal
    scales = torch.tensor([0.8, 0.6, 0.4, 0.3])

    def draw(n):
        z = torch.randn(n, rank, generator=g) * scales
        return (0.5 + z @ basis.T + 0.005 * torch.randn(n, 64, generator=g)).clamp(0, 1).reshape(n, 1, 8, 8)

    y = lambda n: torch.arange(n) % 2  # noqa: E731
    manifest = {"shape": [1, 8, 8], "classes": ["a", "b"], "sha256": "synthetic"}
    return Dataset(draw(n_train), y(n_train), draw(n_test), y(n_test), draw(n_test), y(n_test), manifest)


def test_linear_autoencoder_converges_to_pcas_subspace(tmp_path):
    data = _low_rank_dataset()
    cfg = parse_config({"autoencoders": {"linear": {"code_size": 4, "optimizer": "adam", "lr": 0.01, "epochs": 120,
                                                     "batch_size": 32}}, "train": {"grid_size": 16}})
    assert train_model("linear", cfg, data, TrainPaths.for_model("linear", tmp_path))
    model, _ = load_model(tmp_path / "models" / "linear.pt")
    analysis = model.analyze(data.x_train, data.x_test, 0)
    assert analysis.metrics["principal_angle_max_deg"] < 5.0  # the same subspace
    mse = float(((model.reconstruct(data.x_test) - data.x_test) ** 2).mean())
    variance = float(data.x_test.flatten(1).var(0).mean())  # per pixel
    # both explain the same share of the variance, to within half a percent
    assert abs(mse - pca_mse(data.x_train, data.x_test, 4)) < 0.005 * variance


def test_tied_decoder_uses_the_encoders_transposed_weights():
    cfg = TiedConfig()
    tied, stacked = Tied(cfg, SHAPE), Stacked(StackedConfig(), SHAPE)
    n_tied = sum(p.numel() for p in tied.parameters())
    n_stacked = sum(p.numel() for p in stacked.parameters())
    assert n_tied == n_stacked - (784 * 100 + 100 * 30)  # only the decoder's weight matrices are gone
    z = torch.rand(3, 30)
    before = tied.decode(z)
    with torch.no_grad():
        tied.layers[1].weight.mul_(2)  # an encoder weight...
    assert not torch.allclose(tied.decode(z), before)  # ...is also the decoder's


def test_greedy_trains_one_layer_at_a_time_then_the_stack():
    model = Greedy(GreedyConfig(pretrain_epochs=2, epochs=6), SHAPE)
    assert [model.start_epoch(e) for e in range(1, 7)] == ["layer1", "layer1", "layer2", "layer2", "finetune", "finetune"]
    x = torch.rand(8, *SHAPE)

    def reached(epoch):
        model.zero_grad()
        model.start_epoch(epoch)
        model.loss(x)["loss"].backward()
        return {k for k, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}

    assert reached(1) == {"encoders.0.weight", "encoders.0.bias", "decoders.0.weight", "decoders.0.bias"}
    assert reached(3) == {"encoders.1.weight", "encoders.1.bias", "decoders.1.weight", "decoders.1.bias"}
    assert reached(5) == {k for k, _ in model.named_parameters()}


def test_greedy_history_records_the_phases_and_the_whole_split_at_each_phase_end(tiny_raw, tiny_data, tmp_path,
                                                                                  monkeypatch):
    """Per-epoch MSE comes from fixed subsets; the whole test split is measured at the last epoch of each phase
    (the numbers the report's before/after fine-tuning table uses) and at the last epoch, nowhere else."""
    import copy
    import json

    import pipeline.train.autoencoder as loop
    from pipeline.train.common import batched

    monkeypatch.setattr(loop, "EPOCH_EVAL_IMAGES", 30)  # fewer than the tiny test split's 100
    raw = copy.deepcopy(tiny_raw)
    raw["autoencoders"]["greedy"].update(pretrain_epochs=2, epochs=6)
    cfg = parse_config(raw)
    paths = TrainPaths.for_model("greedy", tmp_path)
    assert train_model("greedy", cfg, tiny_data, paths)
    history = json.loads((paths.run_dir / "history.json").read_text())
    assert [r["phase"] for r in history] == ["layer1", "layer1", "layer2", "layer2", "finetune", "finetune"]
    assert ["val_mse_full" in r for r in history] == [False, True, False, True, False, True]
    model, payload = load_model(paths.model)
    phases = payload["extra"]["phase_val_mse"]
    assert phases == {"layer1": history[1]["val_mse_full"], "layer2": history[3]["val_mse_full"],
                      "finetune": history[5]["val_mse_full"]}
    model.eval()
    with torch.no_grad():
        whole = float(((batched(model.reconstruct, tiny_data.x_val) - tiny_data.x_val) ** 2).mean())
    assert phases["finetune"] == pytest.approx(whole, rel=1e-6) and history[5]["val_mse"] != phases["finetune"]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device on this machine"))])
def test_the_epoch_measurements_do_not_change_the_training(device, tiny_raw, tiny_data, tmp_path, monkeypatch):
    """The denoising loss draws noise, also when the epoch's end measures it on test images: those draws come
    from their own seeded stream (on CUDA the device's generator too), so measuring more or fewer images per
    epoch trains the same weights."""
    import pipeline.train.autoencoder as loop

    tiny_cfg = parse_config({**tiny_raw, "device": device})
    weights = []
    for n in (40, 90):
        monkeypatch.setattr(loop, "EPOCH_EVAL_IMAGES", n)
        paths = TrainPaths.for_model(f"denoising_gaussian-{n}", tmp_path)
        assert train_model("denoising_gaussian", tiny_cfg, tiny_data, paths)
        weights.append(load_model(paths.model)[0].state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize("noise, level", [("gaussian", 0.2), ("dropout", 0.5)])
def test_denoising_noise_only_at_training_time(noise, level):
    model = Denoising(DenoisingConfig(noise=noise, noise_level=level), SHAPE).eval()
    x = torch.rand(4, *SHAPE)
    assert torch.equal(model(x), model(x))  # a clean forward pass: no noise at inference
    noisy = model.corrupt(torch.ones(2000, 1, 1, 1), torch.Generator().manual_seed(0))
    if noise == "dropout":
        assert set(noisy.unique().tolist()) == {0.0, 2.0}  # dropped, or kept and scaled by 1/(1 - p)
        assert float((noisy == 0).float().mean()) == pytest.approx(0.5, abs=0.05)
    else:
        assert float((noisy - 1).std()) == pytest.approx(0.2, abs=0.02)
    analysis = model.analyze(x, x, 0)
    assert set(analysis.metrics) == {"noisy_test_mse", "noise_mse"} and analysis.grids["denoising"].shape[:2] == (3, 4)


def test_kl_sparsity_penalty_matches_the_lecture_formula():
    p, q = 0.05, torch.tensor([0.05, 0.2, 0.5])
    expected = [p * math.log(p / v) + (1 - p) * math.log((1 - p) / (1 - v)) for v in q.tolist()]
    assert kl_divergence(p, q).tolist() == pytest.approx(expected)
    assert float(kl_divergence(p, q)[0]) == pytest.approx(0.0)  # no penalty at the target


def test_sparse_penalties_and_analysis():
    x = torch.rand(16, *SHAPE)
    l1 = Sparse(SparseConfig(penalty="l1", weight=1e-3), SHAPE)
    a = l1.encode(x)
    assert a.shape == (16, 300) and float(a.min()) > 0 and float(a.max()) < 1  # sigmoid codings
    assert float(l1.penalty(a)) == pytest.approx(float(a.sum(1).mean()), rel=1e-6)
    kl = Sparse(SparseConfig(penalty="kl", weight=0.1, target=0.05), SHAPE)
    terms = kl.loss(x)
    assert float(terms["loss"]) == pytest.approx(float(terms["reconstruction"] + 0.1 * terms["sparsity"]), rel=1e-5)
    analysis = kl.analyze(x, x, 0)
    assert analysis.metrics["target_activation"] == 0.05 and len(analysis.arrays["unit_mean_activation"]) == 300


def test_vae_interpolation_grids():
    model = VAE(VAEConfig(code_size=4), SHAPE).eval()
    grids = model.analyze(torch.rand(20, *SHAPE), torch.rand(20, *SHAPE), 0).grids
    assert grids["latent_axes"].shape == (4, 9, *SHAPE)  # one row per latent axis
    assert grids["interpolation"].shape == (8, 11, *SHAPE)  # 8 pairs: the two images and 9 decodings between


def test_few_label_experiment_frozen_keeps_the_encoder(tiny_cfg, tiny_data):
    seed_everything(0)
    pretrained = build("stacked", tiny_cfg.model("stacked"), tiny_data.shape)
    before = {k: v.clone() for k, v in pretrained.state_dict().items()}
    fresh = build("stacked", tiny_cfg.model("stacked"), tiny_data.shape)
    cfg = tiny_cfg.evaluate.model_copy(update={"few_labels": [30], "few_label_steps": 20})
    out = few_label_accuracy(pretrained, fresh, tiny_data.x_train, tiny_data.y_train, tiny_data.x_test,
                             tiny_data.y_test, 10, cfg, 0)
    assert set(out) == {"few_label_frozen_30", "few_label_finetuned_30", "few_label_scratch_30"}
    assert all(0 <= v <= 1 for v in out.values())
    assert all(torch.equal(before[k], v) for k, v in pretrained.state_dict().items())  # copies were trained


def test_tsne_map_is_seeded():
    codes, labels = torch.randn(120, 5), torch.arange(120) % 3
    a, b = tsne_map(codes, labels, 0), tsne_map(codes, labels, 0)
    assert a == b and len(a["tsne_x"]) == 120 and a["tsne_label"][:3] == [0, 1, 2]
