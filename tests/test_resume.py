"""Interrupted training resumes from its last checkpoint and ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline import StudyError
from pipeline.train.run import train_model
from pipeline.train.session import TrainPaths


def _final(paths: TrainPaths):
    model = torch.load(paths.model, weights_only=True)["state_dict"]
    history = json.loads((paths.run_dir / "history.json").read_text())
    return model, history


@pytest.mark.parametrize("name, stop_at", [("vae", 17), ("dcgan", 9), ("ddpm", 9)])
def test_resume_matches_an_uninterrupted_run(name, stop_at, tiny_cfg, tiny_data, tmp_path):
    straight = TrainPaths.for_model(name, tmp_path / "straight")
    assert train_model(name, tiny_cfg, tiny_data, straight)
    assert not straight.checkpoint.exists()  # discarded once the model file is written

    broken = TrainPaths.for_model(name, tmp_path / "broken")
    # stop mid-epoch (12 steps an epoch with 400 images and batch 32), between two periodic checkpoints
    assert not train_model(name, tiny_cfg, tiny_data, broken, max_steps=stop_at)
    assert broken.checkpoint.exists() and not broken.model.exists()
    assert torch.load(broken.checkpoint, weights_only=True)["state"]["step"] == stop_at
    assert train_model(name, tiny_cfg, tiny_data, broken)  # a new process would do exactly this

    (w1, h1), (w2, h2) = _final(straight), _final(broken)
    assert h1 == h2
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)


def test_checkpoint_of_other_settings_is_not_resumed(tiny_cfg, tiny_data, tmp_path, capsys):
    paths = TrainPaths.for_model("stacked", tmp_path)
    assert not train_model("stacked", tiny_cfg, tiny_data, paths, max_steps=3)
    raw = tiny_cfg.model_dump()
    raw["autoencoders"]["stacked"]["lr"] = 0.01
    other = type(tiny_cfg).model_validate(raw)
    assert train_model("stacked", other, tiny_data, paths)
    assert "made with other settings" in capsys.readouterr().err
    history = json.loads((paths.run_dir / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]


def test_corrupt_checkpoint_is_one_clear_error(tiny_cfg, tiny_data, tmp_path):
    paths = TrainPaths.for_model("stacked", tmp_path)
    paths.checkpoint.parent.mkdir(parents=True)
    paths.checkpoint.write_bytes(b"\x00garbage")
    with pytest.raises(StudyError, match="unreadable checkpoint .* delete it to start over"):
        train_model("stacked", tiny_cfg, tiny_data, paths)


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (not even `except Exception`)."""


def test_an_epoch_logged_but_not_checkpointed_is_not_logged_twice(tiny_cfg, tiny_data, tmp_path, monkeypatch):
    """Killed after epoch 1's metrics and grids reached MLflow but before its checkpoint: the resumed stage replays
    the end of epoch 1 from the last periodic checkpoint, and MLflow still holds each epoch's values once."""
    import mlflow

    from pipeline.tracking import MlflowTracker
    from pipeline.train.loop import Loop

    paths = TrainPaths.for_model("stacked", tmp_path)
    save = Loop.save

    def dies_at_the_first_epoch_checkpoint(self):
        if self.state.epoch == 1 and self.state.batch == 0:  # epoch 1 finished and logged, not yet saved
            raise Killed
        save(self)

    monkeypatch.setattr(Loop, "save", dies_at_the_first_epoch_checkpoint)
    with pytest.raises(Killed):
        train_model("stacked", tiny_cfg, tiny_data, paths, tracker=MlflowTracker(tmp_path, "kill-test", log_model=False))
    ck = torch.load(paths.checkpoint, weights_only=True)["state"]
    assert ck["epoch"] == 0 and ck["step"] == 10  # the last periodic checkpoint, before epoch 1 ended
    client = mlflow.MlflowClient()
    assert [m.step for m in client.get_metric_history(ck["run_id"], "val_mse")] == [1]  # epoch 1 was logged

    monkeypatch.setattr(Loop, "save", save)
    assert train_model("stacked", tiny_cfg, tiny_data, paths, tracker=MlflowTracker(tmp_path, "kill-test", log_model=False))
    runs = client.search_runs([client.get_experiment_by_name("kill-test").experiment_id])
    assert [r.info.run_id for r in runs] == [ck["run_id"]]  # one run, continued
    for key in ("val_mse", "train_loss"):
        assert [m.step for m in client.get_metric_history(ck["run_id"], key)] == [1, 2], key
    images = [f.path for f in client.list_artifacts(ck["run_id"], "images") if f.path.endswith(".png")]
    steps = sorted(p.split("+step+")[1].split("+")[0] for p in images)
    assert steps == sorted(set(steps)) and len(steps) >= 2  # each epoch's grid once
