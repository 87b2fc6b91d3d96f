"""The MLflow adapter, and a no-op tracker with the same interface for tests and offline use.

`import mlflow` happens only when an MlflowTracker is created (it costs ~2 s), never at module import.
Default store: SQLite `mlflow.db` and `mlartifacts/` at the study root, which the stage layer sets to
`$DVC_ROOT` under DVC so that `dvc exp run` in a temporary copy logs to the same database.
`MLFLOW_TRACKING_URI` overrides the store (a shared tracking server, say).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def run_tags(root: Path, stage: str, model: str | None = None, seed: int | None = None) -> dict[str, str]:
    """Git commit, DVC stage and DVC experiment name (when DVC runs an experiment)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    tags = {"git.commit": commit or "unknown", "dvc.stage": os.environ.get("DVC_STAGE", stage),
            "workspace": str(Path.cwd().resolve()), "host": socket.gethostname()}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.experiment"] = os.environ["DVC_EXP_NAME"]
    if group := os.environ.get("STUDY_RUN") or os.environ.get("DVC_EXP_NAME"):
        tags["study.run"] = group  # the runs of one `make study` (or one experiment) together
    if model:
        tags["model"] = model
    if seed is not None:
        tags["seed"] = str(seed)
    return tags


class NullTracker:
    """Tracks nothing. Same interface as MlflowTracker."""

    @contextmanager
    def run(self, name: str, run_id: str | None = None, tags: dict | None = None,
            params: dict | None = None) -> Iterator[str | None]:
        yield None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_image(self, image: torch.Tensor, key: str, step: int | None = None) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def log_model(self, model: nn.Module, example: torch.Tensor) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        pass

    def describe(self, text: str) -> None:
        """The run's description (markdown), shown on its page and in the runs table."""


# The experiment is one of model training: MLflow 3's UI then opens it on its runs table (not the GenAI overview)
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development",
                   "mlflow.note.content": "The autoencoder, GAN & diffusion study: one run per DVC stage "
                                          "(tags `dvc.stage`, `model`, `seed`; `study.run` groups the runs of one "
                                          "`make study`, `dvc.experiment` those of one `dvc exp run`)."}


class MlflowTracker(NullTracker):
    def __init__(self, root: Path, experiment: str, log_model: bool = True):
        import mlflow

        self.mlflow = mlflow
        self.log_models = log_model
        self.logged: set[tuple[str, int]] = set()  # (metric or image:key, step) already in the run
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"
        mlflow.set_tracking_uri(uri)
        found = mlflow.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            local = uri.startswith("sqlite:") or uri.startswith("file:")
            location = (Path(root).resolve() / "mlartifacts").as_uri() if local else None
            try:
                self.experiment_id = mlflow.create_experiment(experiment, artifact_location=location,
                                                              tags=EXPERIMENT_TAGS)
            except mlflow.exceptions.MlflowException:  # created meanwhile by a stage running in parallel
                self.experiment_id = mlflow.get_experiment_by_name(experiment).experiment_id
            found = mlflow.get_experiment(self.experiment_id)
        if found.tags.get("mlflow.experimentKind") != EXPERIMENT_TAGS["mlflow.experimentKind"]:
            client = mlflow.MlflowClient()
            for k, v in EXPERIMENT_TAGS.items():  # a store made by an earlier version of the study
                client.set_experiment_tag(self.experiment_id, k, v)

    @contextmanager
    def run(self, name: str, run_id: str | None = None, tags: dict | None = None,
            params: dict | None = None) -> Iterator[str]:
        resumed = run_id is not None and self._exists(run_id)
        if not resumed and tags:
            self._end_abandoned(tags)
        if resumed:
            active = self.mlflow.start_run(run_id=run_id)  # continuing an interrupted run
        else:
            active = self.mlflow.start_run(experiment_id=self.experiment_id, run_name=name)
        self.logged = self._already_logged(run_id) if resumed else set()
        with active as run:
            if tags:
                self.mlflow.set_tags(tags)
            if params and not resumed:
                flat = {k: ("null" if v is None else v) for k, v in flatten(params).items()}
                self.mlflow.log_params(flat)
            yield run.info.run_id

    def _end_abandoned(self, tags: dict) -> None:
        """Runs of this stage, in this workspace on this machine, still RUNNING although no checkpoint continues them
        (the stage was killed from outside and its checkpoint is gone): marked KILLED, as they are. A queued
        experiment runs in a workspace of its own, so parallel ones never end each other's runs."""
        keys = ("dvc.stage", "workspace", "host")
        if not all(tags.get(k) for k in keys) or any("'" in tags[k] for k in keys):
            return
        client = self.mlflow.MlflowClient()
        where = " and ".join(f"tags.`{k}` = '{tags[k]}'" for k in keys) + " and attributes.status = 'RUNNING'"
        for run in client.search_runs([self.experiment_id], filter_string=where, max_results=100):
            client.set_terminated(run.info.run_id, status="KILLED")

    def set_tags(self, tags: dict[str, str]) -> None:
        self.mlflow.set_tags(tags)

    def describe(self, text: str) -> None:
        self.mlflow.set_tag("mlflow.note.content", text)

    def _exists(self, run_id: str) -> bool:
        try:
            self.mlflow.get_run(run_id)
            return True
        except Exception:  # MlflowException: a checkpoint from another tracking store
            return False

    def _already_logged(self, run_id: str) -> set[tuple[str, int]]:
        """What an interrupted run logged before it died: every (metric, step) and (image:key, step).

        A stage killed after logging an epoch but before checkpointing it replays that epoch on resume; what the
        first attempt logged is not logged again, so each step of a metric or an image appears once."""
        client = self.mlflow.MlflowClient()
        done = {(key, m.step) for key in client.get_run(run_id).data.metrics
                for m in client.get_metric_history(run_id, key)}
        for f in client.list_artifacts(run_id, "images"):  # images/<key>+step+<step>+timestamp+...
            if found := re.match(r"images/(.+?)[+%]step[+%](\d+)[+%]", f.path):
                done.add((f"image:{found[1]}", int(found[2])))
        return done

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        at = step or 0  # MLflow's step when none is given
        finite = {k: float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float)) and np.isfinite(v) and (k, at) not in self.logged}
        if finite:
            self.mlflow.log_metrics(finite, step=step)
            self.logged.update((k, at) for k in finite)

    def log_image(self, image: torch.Tensor, key: str, step: int | None = None) -> None:
        if (f"image:{key}", step or 0) in self.logged:
            return
        self.logged.add((f"image:{key}", step or 0))
        array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()  # (H, W, C)
        if array.shape[-1] == 1:
            array = array[..., 0]
        self.mlflow.log_image(array, key=key, step=step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_model(self, model: nn.Module, example: torch.Tensor) -> None:
        if not self.log_models:
            return
        import mlflow.pytorch

        model = model.cpu().eval()
        # pt2 (torch.export): a graph that loads without this package; an example of two keeps the batch
        # dimension dynamic (an example of one would fix it to 1)
        mlflow.pytorch.log_model(
            model, name="model", input_example=example.cpu().numpy(), serialization_format="pt2",
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )
