"""Metrics behave as defined on inputs whose answer is known."""

from __future__ import annotations

import math
from unittest.mock import patch

import pytest
import torch

from pipeline import StudyError
from pipeline.evaluate.metrics import (Gaussian, class_coverage, embed, fid, generative_metrics, kid, linear_probe,
                                       pca_mse, precision_recall)
from pipeline.models.pca import PCA, PCAConfig


def test_precision_recall_on_known_sets():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(300, 8, generator=g)
    assert precision_recall(real, real.clone(), k=3) == (1.0, 1.0)
    far = torch.randn(200, 8, generator=g) + 100.0
    assert precision_recall(real, far, k=3) == (0.0, 0.0)
    # a generator that covers only half of the real data: precise, half the recall
    half = real[real[:, 0] > 0]
    p, r = precision_recall(real, half, k=3)
    assert p == 1.0 and 0.4 < r < 0.9


def test_class_coverage_counts_and_kl():
    uniform = class_coverage(torch.arange(1000) % 10, 10, 0.2)
    assert uniform["classes_covered"] == 10 and uniform["class_kl"] == pytest.approx(0.0, abs=1e-12)
    collapsed = class_coverage(torch.full((500,), 3), 10, 0.2)
    assert collapsed["classes_covered"] == 1 and collapsed["class_kl"] == pytest.approx(math.log(10))
    # a class with a few stray predictions is not covered: 1% < 0.2 x 10%
    stray = torch.cat([torch.arange(990) % 9, torch.full((10,), 9)])
    assert class_coverage(stray, 10, 0.2)["classes_covered"] == 9


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_corruption(tiny_cfg, tiny_data, tiny_evaluator):
    x = tiny_data.x_train[:200]
    same = generative_metrics(tiny_evaluator, x, x.clone(), tiny_cfg.evaluate, 0, 10)
    noisy = generative_metrics(tiny_evaluator, x, (x + 0.5 * torch.rand_like(x)).clamp(0, 1), tiny_cfg.evaluate, 0, 10)
    assert abs(same["fid"]) < 1e-2 and noisy["fid"] > 10 * max(same["fid"], 1e-3)
    assert noisy["kid_mean"] > same["kid_mean"]


class _Identity(torch.nn.Module):
    """torchmetrics' custom feature extractor that takes features as they are."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x):
        return x


def test_fid_and_kid_from_features_agree_with_torchmetrics():
    """Our FID/KID work on features computed once; torchmetrics (the reference) on the same features."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    g = torch.Generator().manual_seed(0)
    real = torch.randn(600, 16, generator=g).double()
    fake = (1.3 * torch.randn(400, 16, generator=g) + 0.4).double()
    ref = FrechetInceptionDistance(feature=_Identity(16))
    ref.update(real, real=True)
    ref.update(fake, real=False)
    assert fid(Gaussian(real), Gaussian(fake)) == pytest.approx(float(ref.compute()), rel=1e-6)
    # one subset of every sample: no random draw on either side, so the two must agree exactly
    ref = KernelInceptionDistance(feature=_Identity(16), subsets=1, subset_size=400)
    ref.update(real[:400], real=True)
    ref.update(fake, real=False)
    assert kid(real[:400], fake, 1, 400, 0)[0] == pytest.approx(float(ref.compute()[0]), rel=1e-6)
    mean, std = kid(real, fake, 20, 100, 0)
    assert mean > 0 and std > 0 and kid(real, fake, 20, 100, 0) == (mean, std)  # seeded
    with patch("pipeline.evaluate.metrics.KID_WHOLE", 100):  # sets too large for whole kernels: each subset's own
        assert kid(real, fake, 20, 100, 0) == pytest.approx((mean, std), rel=1e-9)


def test_generative_metrics_are_deterministic_and_complete(tiny_cfg, tiny_data, tiny_evaluator):
    a = generative_metrics(tiny_evaluator, tiny_data.x_train, tiny_data.x_test, tiny_cfg.evaluate, 7, 10)
    b = generative_metrics(tiny_evaluator, tiny_data.x_train, tiny_data.x_test, tiny_cfg.evaluate, 7, 10)
    assert a == b
    assert {"fid", "kid_mean", "kid_std", "precision", "recall", "classes_covered", "class_kl", "n_real",
            "n_generated"} <= a.keys()
    assert a["n_real"] == 400 and a["n_generated"] == 100
    assert a["n_real_pr"] == 100  # precision/recall compare as many real images as generated ones


def test_metrics_over_sample_sets_give_mean_and_spread(tiny_cfg, tiny_data, tiny_evaluator):
    from pipeline.evaluate.metrics import generative_metrics_sets

    fake = (tiny_data.x_train[:200] + 0.3 * torch.rand(200, *tiny_data.shape)).clamp(0, 1)  # 2 sets of 100
    m = generative_metrics_sets(tiny_evaluator, tiny_data.x_train, fake, tiny_cfg.evaluate, 7, 10)
    assert m["sample_sets"] == 2 and m["n_generated"] == 100 and len(m["fid_sets"]) == 2
    assert m["fid"] == pytest.approx(sum(m["fid_sets"]) / 2, rel=1e-5) and m["fid_std"] > 0
    one = generative_metrics(tiny_evaluator, tiny_data.x_train, fake[:100], tiny_cfg.evaluate, 7, 10)
    assert m["fid_sets"][0] == pytest.approx(one["fid"], rel=1e-5)


def test_fid_beside_other_references_matches_fid_against_them(tiny_cfg, tiny_data, tiny_evaluator):
    from pipeline.evaluate.metrics import generative_metrics_sets

    fake = (tiny_data.x_train[:200] + 0.3 * torch.rand(200, *tiny_data.shape)).clamp(0, 1)
    m = generative_metrics_sets(tiny_evaluator, tiny_data.x_test, fake, tiny_cfg.evaluate, 7, 10,
                                {"train": tiny_data.x_train, "val": tiny_data.x_val})
    alone = generative_metrics_sets(tiny_evaluator, tiny_data.x_val, fake, tiny_cfg.evaluate, 7, 10)
    assert m["fid_val_sets"] == pytest.approx(alone["fid_sets"], rel=1e-9) and m["fid_val_std"] > 0
    assert len(m["fid_train_sets"]) == 2 and m["fid_train"] != m["fid"]


def test_memorization_tells_copies_from_fresh_images(tiny_cfg, tiny_data, tiny_evaluator):
    """Known answers: training images themselves (a perfect copier) score 0; real held-out images, which no model
    saw, score below 1 (the train split is the larger set) and well above 0; near copies of training images (a
    little noise) score well below the held-out images."""
    from pipeline.evaluate.metrics import memorization

    x_train, x_val = tiny_data.x_train, tiny_data.x_val
    copies = memorization(tiny_evaluator, x_train[:100], x_train, x_val)
    fresh = memorization(tiny_evaluator, tiny_data.x_test, x_train, x_val)
    noise = 0.02 * torch.randn(100, *tiny_data.shape, generator=torch.Generator().manual_seed(0))
    near = memorization(tiny_evaluator, (x_train[:100] + noise).clamp(0, 1), x_train, x_val)
    assert copies["memorization"] < 1e-6 and copies["memorization_features"] < 1e-6  # 0 up to rounding
    assert 0.5 < fresh["memorization"] < 1.05 and 0.3 < fresh["memorization_features"] < 1.2
    assert near["memorization"] < 0.5 * fresh["memorization"]
    assert fresh["nearest_train_pixels"] > near["nearest_train_pixels"]


def test_the_evaluator_refuses_images_outside_0_1(tiny_cfg, tiny_data, tiny_evaluator):
    """0-255 pixels (or the generators' [-1, 1]) fed where [0, 1] is expected must fail, not give a number."""
    with pytest.raises(StudyError, match=r"\[0, 1\]"):
        embed(tiny_evaluator, tiny_data.x_test * 255)
    with pytest.raises(StudyError, match=r"\[0, 1\]"):
        generative_metrics(tiny_evaluator, tiny_data.x_train, tiny_data.x_test * 2 - 1, tiny_cfg.evaluate, 0, 10)
    with pytest.raises(StudyError, match="float"):
        embed(tiny_evaluator, (tiny_data.x_test * 255).to(torch.uint8))


def test_class_count_comes_from_the_data(tiny_data, tiny_evaluator, tiny_cfg):
    m = generative_metrics(tiny_evaluator, tiny_data.x_train, tiny_data.x_test, tiny_cfg.evaluate, 7, 12)
    assert len(m["class_counts"]) == 12  # num_classes is the manifest's, not a literal 10


def test_kid_subset_larger_than_the_samples_is_refused(tiny_cfg, tiny_data, tiny_evaluator):
    with pytest.raises(StudyError, match="kid_subset_size"):
        generative_metrics(tiny_evaluator, tiny_data.x_train, tiny_data.x_test[:20], tiny_cfg.evaluate, 0, 10)


def test_pca_baseline_matches_the_pca_model(tiny_data):
    model = PCA(PCAConfig(code_size=12), tiny_data.shape)
    model.fit(tiny_data.x_train)
    own = float(((model.reconstruct(tiny_data.x_test) - tiny_data.x_test) ** 2).mean())
    assert own == pytest.approx(pca_mse(tiny_data.x_train, tiny_data.x_test, 12), rel=1e-5)
    assert pca_mse(tiny_data.x_train, tiny_data.x_test, 40) < pca_mse(tiny_data.x_train, tiny_data.x_test, 5)


def test_linear_probe_reads_labels_from_informative_codes(tiny_data, tiny_evaluator):
    f_train, _ = embed(tiny_evaluator, tiny_data.x_train)
    f_test, _ = embed(tiny_evaluator, tiny_data.x_test)
    informative = linear_probe(f_train, tiny_data.y_train, f_test, tiny_data.y_test, 500)
    noise = linear_probe(torch.randn(400, 16), tiny_data.y_train, torch.randn(100, 16), tiny_data.y_test, 500)
    assert informative > 0.6 and noise < 0.35


def test_an_evaluation_embeds_each_tensor_once(tiny_evaluator, tiny_data):
    from pipeline.evaluate.metrics import embeddings_reused

    x = tiny_data.x_test[:64]
    with embeddings_reused():
        first, again, copy = embed(tiny_evaluator, x), embed(tiny_evaluator, x), embed(tiny_evaluator, x.clone())
    assert again[0] is first[0] and copy[0] is not first[0] and torch.equal(copy[0], first[0])
    assert embed(tiny_evaluator, x)[0] is not first[0]  # outside it, nothing is kept


def test_the_evaluator_for_inference_is_the_same_function(tiny_data):
    from pipeline.evaluate.evaluator import EvaluatorNet

    trained = EvaluatorNet(tiny_data.shape, 10)
    with torch.no_grad():
        for m in trained.modules():  # batch norms with statistics of their own, so that folding them matters
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0), m.weight.uniform_(0.5, 2.0)
    trained.eval()
    x = tiny_data.x_test[:32]
    with torch.no_grad():
        before = trained.features(x)
        after = trained.for_inference().features(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in trained.modules())
    assert torch.allclose(after, before, rtol=1e-4, atol=1e-5)
