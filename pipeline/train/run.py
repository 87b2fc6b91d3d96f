"""`train_model`: any registered model through its family's loop, for callers that train models of several
families (tests, notebooks). The stages import only their own family's loop (pipeline.code)."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import StudyConfig
from pipeline.data import Dataset
from pipeline.models import spec
from pipeline.train.autoencoder import train_autoencoder
from pipeline.train.diffusion import train_diffusion
from pipeline.train.gan import train_gan
from pipeline.train.session import TrainPaths, run_session

LOOPS = {"autoencoder": train_autoencoder, "gan": train_gan, "diffusion": train_diffusion}


def train_model(name: str, cfg: StudyConfig, data: Dataset, paths: TrainPaths, tracker=None,
                root: Path = Path("."), max_steps: int | None = None, judge=None) -> bool:
    return run_session(LOOPS[spec(name).family], name, cfg, data, paths, tracker, root, max_steps, judge)
