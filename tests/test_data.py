"""prepare: real data, seeded stratified split, manifest with checksum; loading checks it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline import StudyError
from pipeline.config import DataConfig
from pipeline.data import load, prepare


def test_mnist5k_three_splits_are_stratified_and_disjoint_with_a_manifest(tmp_path):
    manifest = prepare(DataConfig(), 42, tmp_path / "prepared")
    assert manifest["dataset"] == "mnist5k" and manifest["shape"] == [1, 28, 28]
    assert manifest["splits"]["train"] == {"images": 3500, "class_counts": [350] * 10}
    assert manifest["splits"]["val"] == {"images": 500, "class_counts": [50] * 10}
    assert manifest["splits"]["test"] == {"images": 1000, "class_counts": [100] * 10}
    assert manifest["pixel_range"] == [0, 255]
    data = load(tmp_path / "prepared")
    assert data.x_train.shape == (3500, 1, 28, 28) and data.x_test.shape == (1000, 1, 28, 28)
    assert data.x_val.shape == (500, 1, 28, 28) and data.y_val.shape == (500,)
    # disjoint: no image of one split is in another (mnist5k has no duplicate digits), and together they are all
    rows = {s: {bytes(a) for a in np.load(tmp_path / "prepared" / f"x_{s}.npy").reshape(-1, 784)}
            for s in ("train", "val", "test")}
    assert not (rows["train"] & rows["val"] or rows["train"] & rows["test"] or rows["val"] & rows["test"])
    assert sum(map(len, rows.values())) == 5000
    assert float(data.x_train.min()) == 0.0 and float(data.x_train.max()) == 1.0
    # real digits: on average about a fifth of an MNIST image is ink
    assert 0.08 < float(data.x_train.mean()) < 0.2


def test_same_seed_same_bytes_other_seed_other_split(tmp_path):
    cfg = DataConfig(train_size=300, val_size=50, test_size=100)
    a = prepare(cfg, 1, tmp_path / "a")
    b = prepare(cfg, 1, tmp_path / "b")
    c = prepare(cfg, 2, tmp_path / "c")
    for name in ("x_train.npy", "x_val.npy", "y_test.npy", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert a["sha256"] == b["sha256"] != c["sha256"]


def test_tampered_arrays_are_refused(tmp_path):
    prepare(DataConfig(train_size=100, val_size=50, test_size=50), 0, tmp_path / "p")
    x = np.load(tmp_path / "p" / "x_test.npy")
    x[0, 0, 0, 0] ^= 1
    np.save(tmp_path / "p" / "x_test.npy", x)
    with pytest.raises(StudyError, match="checksum"):
        load(tmp_path / "p")
    with pytest.raises(StudyError, match="run the 'prepare' stage"):
        load(tmp_path / "nothing")


def test_too_large_split_is_a_clear_error(tmp_path):
    with pytest.raises(StudyError, match=r"test_size \(1000\) \+ val_size \(500\) \+ train_size \(4000\) must fit "
                                         r"in the 5000 images"):
        prepare(DataConfig(train_size=4000), 0, tmp_path / "p")
    assert not (tmp_path / "p").exists()  # nothing half-written


def _image_folder(root, classes=3, per_class=10, size=(20, 14)):
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class_{c}" / f"{i}.png")


def test_folder_dataset_resized_and_split(tmp_path):
    _image_folder(tmp_path / "imgs", per_class=12)
    cfg = DataConfig(dataset="folder", folder=str(tmp_path / "imgs"), color="rgb", image_size=16, test_size=12,
                     val_size=12)
    manifest = prepare(cfg, 0, tmp_path / "p")
    assert manifest["shape"] == [3, 16, 16]
    assert manifest["classes"] == ["class_0", "class_1", "class_2"]
    assert manifest["splits"]["test"]["class_counts"] == [4, 4, 4]
    assert manifest["splits"]["val"]["class_counts"] == [4, 4, 4]
    assert manifest["splits"]["train"]["class_counts"] == [4, 4, 4]
    gray = prepare(cfg.model_copy(update={"color": "grayscale"}), 0, tmp_path / "g")
    assert gray["shape"] == [1, 16, 16]


def test_folder_errors(tmp_path):
    with pytest.raises(StudyError, match="no such folder"):
        prepare(DataConfig(dataset="folder", folder=str(tmp_path / "absent")), 0, tmp_path / "p")
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "x.png").write_text("not an image")
    (tmp_path / "bad" / "b").mkdir()
    (tmp_path / "bad" / "b" / "y.png").write_text("not an image")
    with pytest.raises(StudyError, match="cannot read image"):
        prepare(DataConfig(dataset="folder", folder=str(tmp_path / "bad"), test_size=10), 0, tmp_path / "p")


def test_torchvision_dataset_offline_names_the_alternatives(tmp_path):
    """Offline (as on CI) the download fails with a line naming mnist5k and folder; online it downloads."""
    cfg = DataConfig(dataset="fashion_mnist", root=str(tmp_path / "raw"), train_size=500, test_size=100)
    try:
        manifest = prepare(cfg, 0, tmp_path / "p")
    except StudyError as exc:
        assert "could not download" in str(exc) and "mnist5k" in str(exc) and "folder" in str(exc)
        assert "\n" not in str(exc)
    else:
        assert manifest["shape"] == [1, 28, 28]


def test_showcase_cycles_through_the_classes():
    import torch

    from pipeline.data import showcase

    y = torch.tensor([0] * 5 + [1] * 5 + [2] * 2)  # ordered by class, as mnist5k is
    picked = showcase(y, 8)
    assert y[picked].tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert len(set(picked.tolist())) == 8
