"""The registry, params.yaml and dvc.yaml name the same models; dvc.yaml's stages run real commands and depend on
exactly the code they import."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from pipeline.code import (COMMAND_HANDLES, HANDLES, PACKAGES, ROOT as CODE_ROOT, command_files, model_files,
                           registry_modules, stage_commands)
from pipeline.models import EVAL_STAGE, MODELS, PARAMS_BLOCK, TRAIN_STAGE
from stages import app
from tests.conftest import ROOT


def _dvc_yaml() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_every_registered_model_is_in_the_study_under_its_family(params_raw):
    listed = {name: block for block in PARAMS_BLOCK.values() for name in params_raw[block]}
    assert set(listed) == set(MODELS)
    assert all(PARAMS_BLOCK[MODELS[name].family] == block for name, block in listed.items())


def test_training_and_evaluation_stages_iterate_over_the_params_blocks_and_seeds():
    """Adding a model or a seed to params.yaml gives it its stages: no dvc.yaml edit."""
    stages = _dvc_yaml()["stages"]
    assert set(TRAIN_STAGE) == set(PARAMS_BLOCK) == set(EVAL_STAGE)
    for family, block in PARAMS_BLOCK.items():
        train, evaluate = stages[TRAIN_STAGE[family]], stages[EVAL_STAGE[family]]
        assert train["matrix"] == evaluate["matrix"] == {"model": "${" + block + "}", "seed": "${seeds}"}
        assert train["cmd"] == f"python -m stages {TRAIN_STAGE[family].replace('_', '-')} ${{item.model}} --seed ${{item.seed}}"
        assert evaluate["cmd"] == "python -m stages evaluate ${item.model} --seed ${item.seed}"


def test_dvc_resolves_the_stage_names_people_rely_on(params_raw):
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        names = {stage.addressing for stage in repo.index.stages}
    expected = {"prepare", "evaluator", "report"}
    for family, block in PARAMS_BLOCK.items():
        for seed in params_raw["seeds"]:
            expected |= {f"{TRAIN_STAGE[family]}@{m}-{seed}" for m in params_raw[block]}
            expected |= {f"{EVAL_STAGE[family]}@{m}-{seed}" for m in params_raw[block]}
    assert names == expected


def _code_deps(stage: dict, model: str | None = None) -> set[str]:
    """The project source files among a stage's deps, `${item.model}` read as `model` (a folder stands for every
    .py file in it; a link, pipeline/models/deps/<model>/x.py, for the file it points to)."""
    out: set[str] = set()
    for dep in stage["deps"]:
        path = ROOT / dep.replace("${item.model}", model or "")
        if path.is_dir() and dep.split("/")[0] in PACKAGES:
            out |= {f.resolve().relative_to(ROOT).as_posix() for f in path.rglob("*.py")}
        elif dep.endswith(".py"):
            out.add(dep)
    return out


# Commands that use every model's code: the report settles the learning-rate sweep by each model's validated
# config (pipeline.tuning) and groups ablations by their network class.
EVERY_MODEL = {"report"}


def test_every_stage_depends_on_exactly_the_code_it_imports(params_raw):
    """A file a stage imports but does not list would leave its results stale after an edit; a file it lists
    but does not import would rerun it for nothing. The imports are read from the code (pipeline.code): the
    command's own, and a model's (its stages list pipeline/models/deps/<model>) where the stage trains or
    evaluates one."""
    for name, stage in _dvc_yaml()["stages"].items():
        command = stage["cmd"].split()[3].replace("-", "_")
        models = (list(params_raw[stage["matrix"]["model"][2:-1]]) if "matrix" in stage
                  else list(MODELS) if name in EVERY_MODEL else [None])
        for model in models if "matrix" in stage else [None]:
            imported = set(command_files(command, model))
            if name in EVERY_MODEL:
                imported |= {f for m in models for f in model_files(m)}
            declared = _code_deps(stage, model)
            assert declared == imported, (f"dvc.yaml stage '{name}' ({model or 'no model'}): missing "
                                          f"{sorted(imported - declared)}, not imported {sorted(declared - imported)}")


def test_each_model_s_dependency_links_point_at_its_own_files():
    """pipeline/models/deps/<model>/ links exactly the files the model's module imports beyond the registry (run
    `python -m pipeline.code` after adding a model or an import between model files)."""
    assert {p.name for p in HANDLES.iterdir()} == set(registry_modules()) == set(MODELS)
    for name in MODELS:
        linked = {(p.resolve().relative_to(CODE_ROOT).as_posix(), p.is_symlink()) for p in (HANDLES / name).iterdir()}
        assert linked == {(f, True) for f in model_files(name)}, name
    assert set(model_files("stylegan")) == {"pipeline/models/stylegan.py", "pipeline/models/progan.py"}
    assert set(model_files("progan_no_growing")) == {"pipeline/models/progan.py"}


def test_each_command_s_dependency_links_point_at_the_files_it_imports():
    """pipeline/deps/<command>/ links exactly the files `python -m stages <command>` imports, one folder per command
    of dvc.yaml (run `python -m pipeline.code` after an import changes): each stage lists that folder, one dvc.lock
    entry for 25 files."""
    assert {p.name for p in COMMAND_HANDLES.iterdir()} == set(stage_commands()) >= {"train_gan", "evaluate", "report"}
    for command in stage_commands():
        links = list((COMMAND_HANDLES / command).iterdir())
        assert all(p.is_symlink() and p.name == p.resolve().relative_to(CODE_ROOT).as_posix().replace("/", "__")
                   for p in links), command
        assert sorted(p.resolve().relative_to(CODE_ROOT).as_posix() for p in links) == command_files(command)
    for name, stage in _dvc_yaml()["stages"].items():
        listed = [d for d in stage["deps"] if d.endswith(".py")]
        assert not listed, f"{name}: code listed file by file ({listed[:2]}...), not through pipeline/deps/"


def test_a_model_s_stages_depend_on_its_own_registry_entry_and_the_report_on_all():
    """Adding a model to registry.toml reruns that model's stages and the report, no other model's: each training
    and evaluation stage reads its own table as a DVC params dependency."""
    for name, stage in _dvc_yaml()["stages"].items():
        if "matrix" in stage:
            assert {"pipeline/models/registry.toml": ["${item.model}"]} in stage["params"], name
    assert "pipeline/models" in _dvc_yaml()["stages"]["report"]["deps"]  # the whole registry, its table included


def test_a_broken_registry_entry_is_one_clear_error(tmp_path):
    from pipeline import StudyError
    from pipeline.models import _load

    (tmp_path / "registry.toml").write_text('[x]\nfamily = "gan"\nmodule = "gan"\n')
    with pytest.raises(StudyError, match=r"registry.toml: \[x\] needs exactly the keys"):
        _load(tmp_path / "registry.toml")
    (tmp_path / "registry.toml").write_text('[x]\nfamily = "gans"\nmodule = "gan"\nconfig_class = "A"\n'
                                            'module_class = "B"\nsummary = "c"\n')
    with pytest.raises(StudyError, match="family 'gans' is not one of autoencoder, gan, diffusion"):
        _load(tmp_path / "registry.toml")


def test_import_closure_follows_lazy_and_relative_imports():
    train_gan, train_ae, report = (set(command_files(c)) for c in ("train_gan", "train_ae", "report"))
    assert {"pipeline/train/gan.py", "pipeline/train/objectives.py", "pipeline/evaluate/metrics.py",
            "stages/commands.py", "pipeline/models/__init__.py"} <= train_gan
    assert not {"pipeline/models/dcgan.py", "pipeline/models/progan.py"} & train_gan  # imported by name, with the model
    assert {"pipeline/models/dcgan.py", "pipeline/models/latents.py"} <= set(command_files("train_gan", "dcgan"))
    assert "pipeline/train/gan.py" not in train_ae  # each training command imports its own family's loop
    assert "pipeline/evaluate/pretraining.py" not in train_gan  # evaluation's package stays light
    assert not any(f.startswith("pipeline/report/") for f in train_gan | train_ae)
    assert "pipeline/report/sections.py" in report  # imported inside the report command only


def test_stage_commands_exist_in_the_typer_app():
    import typer.main

    commands = set(typer.main.get_command(app).commands)
    for stage in _dvc_yaml()["stages"].values():
        cmd = stage["cmd"]
        assert cmd.startswith("python -m stages ")
        assert cmd.split()[3] in commands


def test_dvc_analytics_are_off():
    assert "analytics = false" in (ROOT / ".dvc" / "config").read_text()


def test_dvc_parses_yaml_with_the_c_parser():
    """A no-op `dvc repro` is mostly YAML parsing (params.yaml once per stage, dvc.lock twice): the project installs
    libyaml's parser, and ruamel, which DVC reads them with, must find it."""
    from ruamel.yaml import YAML

    assert YAML(typ="safe").Parser.__module__.endswith("_ruamel_yaml")


def test_every_param_a_stage_declares_is_in_params_yaml(params_raw):
    """DVC refuses to run a stage whose declared params are missing: catch it before `dvc repro` does."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        declared = {(Path(dep.def_path).name, key) for stage in repo.index.stages for dep in stage.deps
                    if hasattr(dep, "params") for key in dep.params}
    registry = tomllib.loads((ROOT / "pipeline" / "models" / "registry.toml").read_text())
    for file, key in declared:
        node = registry if file == "registry.toml" else params_raw
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"dvc.yaml declares '{key}', params.yaml lacks it"
            node = node[part]


def test_training_stages_depend_on_every_train_setting_that_changes_results():
    """`dvc exp run -S train.processes=2` (or autocast, sync_batchnorm) must rerun the training stages; only
    where checkpoints are written changes no result."""
    from pipeline.config import TrainConfig

    affects = set(TrainConfig.model_fields) - {"checkpoint_every"}
    for stage in TRAIN_STAGE.values():
        declared = {p for p in _dvc_yaml()["stages"][stage]["params"] if isinstance(p, str)}
        assert {f"train.{k}" for k in affects} <= declared, (stage, sorted(affects))


def test_the_committed_evaluator_is_the_one_the_committed_study_measured_with():
    """The evaluator is trained, and float results differ between CPU types: a fresh clone that retrained it would
    measure every FID with another network than the committed study. Its weights and records are therefore outputs in
    git (`cache: false`), and dvc.lock's hashes are those of the committed files, so `dvc repro` finds the stage done
    on any machine and every evaluation, on any machine, uses the same measure."""
    import hashlib
    import subprocess

    stage = _dvc_yaml()["stages"]["evaluator"]
    outs = {next(iter(o)) if isinstance(o, dict) else o: o for o in stage["outs"]}
    for path in ("models/evaluator.pt", "runs/evaluator"):
        assert isinstance(outs[path], dict) and outs[path][path]["cache"] is False, f"{path} must be kept in git"
        tracked = subprocess.run(["git", "ls-files", path], cwd=ROOT, capture_output=True, text=True).stdout.split()
        assert tracked, f"{path} is not committed"
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    locked = {o["path"]: o["md5"] for o in lock["stages"]["evaluator"]["outs"]}
    assert hashlib.md5((ROOT / "models" / "evaluator.pt").read_bytes()).hexdigest() == locked["models/evaluator.pt"]


def test_the_evaluator_is_the_one_frozen_stage_and_every_other_stage_depends_on_threads():
    """The ruler stays put: no code or params edit retrains models/evaluator.pt (only `dvc unfreeze`, a decision
    of its own); a copy for the tiny profile unfreezes it, since its data is its own. The thread count changes float
    results: every stage DVC would run depends on it."""
    from stages.smoke import own_evaluator

    stages = _dvc_yaml()["stages"]
    assert [name for name, stage in stages.items() if stage.get("frozen")] == ["evaluator"]
    for name, stage in stages.items():
        assert "threads" in stage["params"], name
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(ROOT / "dvc.yaml", Path(tmp) / "dvc.yaml")
        own_evaluator(Path(tmp))
        copied = yaml.safe_load((Path(tmp) / "dvc.yaml").read_text())["stages"]
        assert not any(stage.get("frozen") for stage in copied.values())
        assert copied["evaluator"]["cmd"] == stages["evaluator"]["cmd"]
