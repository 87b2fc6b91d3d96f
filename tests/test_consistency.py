"""The registry, params.yaml and dvc.yaml name the same models; dvc.yaml's stages run real commands."""

from __future__ import annotations

import yaml

from pipeline.models import MODELS, PARAMS_BLOCK, TRAIN_STAGE
from stages import app
from tests.conftest import ROOT


def _dvc_yaml() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_every_registered_model_is_in_the_study_under_its_family(params_raw):
    listed = {name: block for block in PARAMS_BLOCK.values() for name in params_raw[block]}
    assert set(listed) == set(MODELS)
    assert all(PARAMS_BLOCK[MODELS[name].family] == block for name, block in listed.items())


def test_training_stages_iterate_over_the_params_blocks():
    stages = _dvc_yaml()["stages"]
    assert set(TRAIN_STAGE) == set(PARAMS_BLOCK)
    for family, stage in TRAIN_STAGE.items():
        assert stages[stage]["foreach"] == "${" + PARAMS_BLOCK[family] + "}"
        assert stages[stage]["do"]["cmd"] == f"python -m stages {stage.replace('_', '-')} ${{key}}"


def test_evaluate_stage_lists_exactly_the_models_of_params(params_raw):
    listed = _dvc_yaml()["stages"]["evaluate"]["foreach"]
    expected = [*params_raw["autoencoders"], *params_raw["gans"]]
    assert listed == expected, "dvc.yaml's evaluate foreach must list every model of params.yaml, in order"


def test_dvc_resolves_the_stage_names_people_rely_on(params_raw):
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        names = {stage.addressing for stage in repo.index.stages}
    expected = {"prepare", "evaluator", "report"}
    expected |= {f"train_ae@{m}" for m in params_raw["autoencoders"]}
    expected |= {f"train_gan@{m}" for m in params_raw["gans"]}
    expected |= {f"evaluate@{m}" for m in [*params_raw["autoencoders"], *params_raw["gans"]]}
    assert names == expected


def test_stage_commands_exist_in_the_typer_app():
    import typer.main

    commands = set(typer.main.get_command(app).commands)
    for stage in _dvc_yaml()["stages"].values():
        cmd = stage.get("cmd") or stage["do"]["cmd"]
        assert cmd.startswith("python -m stages ")
        assert cmd.split()[3] in commands


def test_dvc_analytics_are_off():
    assert "analytics = false" in (ROOT / ".dvc" / "config").read_text()


def test_every_param_a_stage_declares_is_in_params_yaml(params_raw):
    """DVC refuses to run a stage whose declared params are missing: catch it before `dvc repro` does."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        declared = {key for stage in repo.index.stages for dep in stage.deps if hasattr(dep, "params")
                    for key in dep.params}
    for key in declared:
        node = params_raw
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"dvc.yaml declares '{key}', params.yaml lacks it"
            node = node[part]
