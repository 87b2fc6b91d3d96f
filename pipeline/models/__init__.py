"""The model registry: one entry per model, keyed by the name params.yaml and dvc.yaml use.

The entries live in registry.toml, one table per model: data, not code, so that a model's stages depend on its
own table alone (a DVC params dependency) and adding a model reruns no other model. The family lives in the
entry; no code branches on a model's name. An entry names the file under pipeline/models that implements the
model (its config class above its nn.Module) and the two classes in it; the file is imported when the model is
asked for (`spec(name).config`, `.build`), so that a stage imports the code of its own model only, and its DVC
deps list that code alone: `pipeline/models/deps/<name>/` links the files of the model's own import closure
(`python -m pipeline.code` writes them; tests/test_consistency.py checks them). To add a model, write its file,
add a table to registry.toml and a block under its family in params.yaml, and run `python -m pipeline.code`.
"""

from __future__ import annotations

import dataclasses
import importlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from torch import nn

from pipeline import StudyError

from .base import ImageShape, ModelConfig

Family = Literal["autoencoder", "gan", "diffusion"]
PARAMS_BLOCK: dict[str, str] = {"autoencoder": "autoencoders", "gan": "gans", "diffusion": "diffusion"}  # params.yaml key
TRAIN_STAGE: dict[str, str] = {"autoencoder": "train_ae", "gan": "train_gan", "diffusion": "train_diffusion"}  # dvc.yaml
EVAL_STAGE: dict[str, str] = {"autoencoder": "evaluate_ae", "gan": "evaluate_gan", "diffusion": "evaluate_diffusion"}


@dataclass(frozen=True)
class ModelSpec:
    family: Family
    module: str  # the file that implements it: pipeline/models/<module>.py
    config_class: str  # its config class in that file
    module_class: str  # its nn.Module in that file, built as cls(config, image_shape)
    summary: str

    @property
    def module_name(self) -> str:
        return f"{__name__}.{self.module}"

    @property
    def config(self) -> type[ModelConfig]:
        return getattr(importlib.import_module(self.module_name), self.config_class)

    @property
    def build(self) -> Callable[[ModelConfig, ImageShape], nn.Module]:
        return getattr(importlib.import_module(self.module_name), self.module_class)


REGISTRY = Path(__file__).with_name("registry.toml")


def _load(path: Path) -> dict[str, ModelSpec]:
    try:
        table = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise StudyError(f"{path.name}: {e}") from e
    fields = {f.name for f in dataclasses.fields(ModelSpec)}
    for name, entry in table.items():
        if not isinstance(entry, dict) or set(entry) != fields:
            raise StudyError(f"{path.name}: [{name}] needs exactly the keys {', '.join(sorted(fields))}")
        if entry["family"] not in PARAMS_BLOCK:
            raise StudyError(f"{path.name}: [{name}] family '{entry['family']}' is not one of "
                             f"{', '.join(PARAMS_BLOCK)}")
    return {name: ModelSpec(**entry) for name, entry in table.items()}


MODELS: dict[str, ModelSpec] = _load(REGISTRY)


def run_name(name: str, seed: int) -> str:
    """One training run of a model: its stages, files and MLflow runs are named `<model>-<seed>` (dcgan-42)."""
    return f"{name}-{seed}"


def spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise StudyError(f"unknown model '{name}'; registered models: {', '.join(MODELS)}")
    return MODELS[name]


def build(name: str, cfg: ModelConfig, shape: ImageShape) -> nn.Module:
    return spec(name).build(cfg, shape)
