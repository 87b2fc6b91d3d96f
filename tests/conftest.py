"""Shared fixtures: the real params.yaml, shrunk (few images, one or two epochs), and real prepared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.config import StudyConfig, parse_config
from pipeline.data import Dataset, load, prepare
from stages.smoke import shrink  # the tiny profile `make smoke` runs too

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test`: two workers on two cores, one thread each (and in the
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # stage processes they start), not two threads each fighting
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The end-to-end module first. `make test` runs two pytest-xdist workers and hands out whole modules
    (`--dist loadfile`, in this order): one worker spends the run on that module, the longest, while the other
    takes the rest."""
    items.sort(key=lambda item: item.path.name != "test_e2e.py")  # a stable sort: the rest keep their order


@pytest.fixture(autouse=True)
def _own_tracking_uri():
    """`mlflow.set_tracking_uri` also sets $MLFLOW_TRACKING_URI, which every later stage process of the same
    pytest worker would inherit: each test starts and ends with the variable as the session had it."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(scope="session")
def params_raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture(scope="session")
def tiny_raw(params_raw) -> dict:
    return shrink(params_raw)


@pytest.fixture(scope="session")
def tiny_cfg(tiny_raw) -> StudyConfig:
    return parse_config(tiny_raw)


@pytest.fixture(scope="session")
def tiny_data_dir(tiny_cfg, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "prepared"
    prepare(tiny_cfg.data, tiny_cfg.seed, out)
    return out


@pytest.fixture(scope="session")
def tiny_data(tiny_data_dir) -> Dataset:
    return load(tiny_data_dir)


@pytest.fixture(scope="session")
def tiny_evaluator(tiny_cfg, tiny_data, tmp_path_factory):
    from pipeline.evaluate.evaluator import load_evaluator, train_evaluator

    d = tmp_path_factory.mktemp("evaluator")
    train_evaluator(tiny_cfg, tiny_data, d / "evaluator.pt", d / "run", d / "evaluator.ckpt")
    return load_evaluator(d / "evaluator.pt")


def write_params(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
