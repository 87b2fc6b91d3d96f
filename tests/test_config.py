"""params.yaml is validated into typed config once; every bad value is one line naming the key."""

from __future__ import annotations

import copy

import pytest

from pipeline import StudyError
from pipeline.config import load_config, parse_config, read_params
from tests.conftest import ROOT


def test_the_repository_params_are_valid():
    cfg = load_config(ROOT / "params.yaml")
    assert cfg.data.dataset == "mnist5k"
    assert set(cfg.models()) >= {"pca", "stacked", "vae", "dcgan"}
    assert cfg.model("stacked").hidden == [100] and cfg.model("stacked").code_size == 30
    assert cfg.model("vae").code_size == 10


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda r: r["autoencoders"]["stacked"].update(lr=-1), "autoencoders.stacked.lr: Input should be greater than 0"),
        (lambda r: r["autoencoders"]["stacked"].update(epochs="many"), "autoencoders.stacked.epochs: Input should be a valid integer"),
        (lambda r: r["autoencoders"]["stacked"].update(dropout=0.5), "autoencoders.stacked.dropout: unknown key; allowed here: codings_map, batch_size, optimizer, lr, epochs"),
        (lambda r: r["data"].update(dataset="imagenet"), "data.dataset: Input should be 'mnist5k', 'mnist'"),
        (lambda r: r["autoencoders"].update(transformer={}), "autoencoders.transformer: unknown model 'transformer'; registered: pca, linear, stacked, tied"),
        (lambda r: r["autoencoders"].update(dcgan={}), "autoencoders.dcgan: 'dcgan' is a gan; list it under 'gans'"),
        (lambda r: r.update(device="tpu"), "device: Input should be 'auto', 'cpu' or 'cuda'"),
        (lambda r: r.update(colour="blue"), "colour: unknown key; allowed here: seed, seeds, device, threads, jobs, data"),
        (lambda r: r["autoencoders"]["stacked"].update(loss="bce", output="linear"),
         "autoencoders.stacked.loss: 'bce' needs output 'sigmoid'"),
        (lambda r: r["evaluate"].update(kid_subset_size=5000), "evaluate.kid_subset_size: at most n_generated (1000); got 5000"),
        # list elements carry their own bounds (these reached PyTorch as tracebacks once)
        (lambda r: r["gans"]["progan"].update(channels=[64, 0, 16, 8]), "gans.progan.channels.1: Input should be greater than or equal to 1 (got 0)"),
        (lambda r: r["gans"]["progan"].update(channels=[64, -1, 16, 8]), "gans.progan.channels.1: Input should be greater than or equal to 1 (got -1)"),
        (lambda r: r["autoencoders"]["conv"].update(channels=[0, 32, 64]), "autoencoders.conv.channels.0: Input should be greater than or equal to 1"),
        (lambda r: r["gans"]["gan"].update(g_hidden=[100, 10**9]), "gans.gan.g_hidden.1: Input should be less than or equal to 8192"),
        (lambda r: r["gans"]["gan"].update(d_hidden=[True]), "gans.gan.d_hidden.0: Input should be a valid integer (got True)"),
        (lambda r: r["evaluate"].update(few_labels=[0, "all"]), "evaluate.few_labels.0: "),
        # rules between fields, reported on the field that breaks them
        (lambda r: r["gans"]["stylegan"].update(coarse_layers=99),
         "gans.stylegan.coarse_layers: 1 to 7 (the synthesis network has 8 style layers); got 99"),
        (lambda r: r["gans"]["stylegan"].update(d_channels=[64, 32]), "gans.stylegan.d_channels: one width per resolution"),
        (lambda r: r["gans"]["stylegan"].update(batch_size=30), "gans.stylegan.batch_size: a multiple of 4"),
        (lambda r: r["gans"]["progan"].update(group_size=5, batch_size=64), "gans.progan.group_size: must divide batch_size (64)"),
        (lambda r: r["evaluate"].update(knn_k=60, curve_samples=50), "evaluate.knn_k: below n_generated (1000) and curve_samples (50)"),
        (lambda r: r["data"].update(test_size=10) or r["evaluate"].update(knn_k=10), "evaluate.knn_k: below data.test_size and data.val_size (10)"),
        (lambda r: r["autoencoders"]["stacked"].update(epochs=2.0), "autoencoders.stacked.epochs: Input should be a valid integer (got 2.0)"),
        (lambda r: r["gans"]["dcgan"].update(objective="hinge"), "gans.dcgan.objective: Input should be 'nonsaturating'"),
    ],
)
def test_bad_params_give_one_line_naming_the_key(params_raw, edit, expected):
    raw = copy.deepcopy(params_raw)
    edit(raw)
    with pytest.raises(StudyError) as err:
        parse_config(raw)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message and message.startswith("params.yaml: ")


def test_invalid_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: 1\ndata: [unclosed\n")
    with pytest.raises(StudyError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(StudyError, match="no such file"):
        load_config(tmp_path / "absent.yaml")


def test_unknown_model_lookup_lists_the_models(params_raw):
    cfg = parse_config(params_raw)
    with pytest.raises(StudyError, match="models there: pca, linear, stacked, .*, vae, gan, dcgan, .*, stylegan"):
        cfg.model("biggan")


def test_config_is_frozen(params_raw):
    cfg = parse_config(params_raw)
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frozen"):
        cfg.seed = 3  # type: ignore[misc]


def test_params_rewritten_by_dvc_keep_on_off_as_strings(tmp_path):
    # `dvc exp run -S` dumps params.yaml as YAML 1.2, without the quotes around "on"/"off"
    text = (ROOT / "params.yaml").read_text().replace('"on"', "on").replace('"off"', "off")
    assert 'minibatch_stddev: off' in text
    (tmp_path / "params.yaml").write_text(text)
    cfg = load_config(tmp_path / "params.yaml")
    assert cfg.gans.progan_no_mbstd.minibatch_stddev == "off" and cfg.gans.progan.equalized_lr == "on"
    assert read_params("a: true\nb: False\nc: yes\nd: 1e-3\ne: -2.5\nf: 7\ng: .inf\nh: 1_0") == {
        "a": True, "b": False, "c": "yes", "d": 1e-3, "e": -2.5, "f": 7, "g": float("inf"), "h": 10}


@pytest.mark.parametrize("batch", [16, 64])
def test_the_ema_half_life_is_in_images_whatever_the_batch(batch):
    """The study's EMA: at the end of the budget the last half-life's images carry half the average's weight, at
    any batch size, and the ramp-up reaches the configured half-life well before the budget ends."""
    import math

    from pipeline.config import EMAConfig, ema_decay

    cfg = load_config(ROOT / "params.yaml")
    half_life, steps = cfg.ema.half_life_images, cfg.budget.images // batch
    decays = [ema_decay(cfg.ema, (step + 1) * batch, batch) for step in range(steps)]
    assert -batch * math.log(2) / math.log(decays[-1]) == pytest.approx(half_life)  # in images, not in steps
    last = decays[-(half_life // batch):]  # the steps of the last half-life's images
    assert math.prod(last) == pytest.approx(0.5, rel=batch / half_life)  # what is left of everything before them
    reached = next(i for i, d in enumerate(decays) if d == decays[-1])
    assert (reached + 1) * batch <= cfg.budget.images / 2
    assert decays == sorted(decays) and decays[0] < 0.5  # the first steps' weights leave the average quickly
    assert ema_decay(EMAConfig(half_life_images=0), 1000, batch) == 0.0  # no average: the live network
    assert ema_decay(EMAConfig(rampup=0), batch, batch) == decays[-1]  # no ramp-up: the full half-life at once
