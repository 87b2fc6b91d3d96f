"""A careless edit of params.yaml never ends in a traceback: every value, list elements included, either works or
stops the stage with one `params.yaml: <key>: <what is allowed>` line.

For every leaf of the real params.yaml (each list element too) the test tries a wrong type, zero, a negative
number, a huge number and null (and, for a list, no element and one more), and an unknown key in every block. Each edit that the config accepts is then taken
as far as a stage takes it before its first optimizer step: the data check (prepare) for `data.*`, the evaluator's
first step for `evaluator.*`, and for a model's own keys, the budget, the seeds, `train.*` and `device`, the model
built and trained for one step on the tiny data (dcgan and stacked stand in for "every model" where a shared key
changed). `evaluate.*` and `tracking.*` are read only after training, so for them the config is the stage up to
there. The only exception allowed is StudyError (the stage prints it as one `error:` line, exit 2).
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any, Iterator

import pytest

from pipeline import StudyError
from pipeline.config import StudyConfig, parse_config
from pipeline.data import load, prepare
from pipeline.models import PARAMS_BLOCK
from pipeline.train.run import train_model
from pipeline.train.session import TrainPaths

SHARED = ("dcgan", "stacked")  # what a key every training stage reads is tried on


def leaves(node: Any, path: tuple = ()) -> Iterator[tuple]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from leaves(v, (*path, k))
    elif isinstance(node, list):
        yield path
        for i, v in enumerate(node):
            yield from leaves(v, (*path, i))
    else:
        yield path


def blocks(node: Any, path: tuple = ()) -> Iterator[tuple]:
    if isinstance(node, dict):
        yield path
        for k, v in node.items():
            yield from blocks(v, (*path, k))


def mutations(value: Any) -> dict[str, Any]:
    wrong = 7 if isinstance(value, str) else "seven"
    out = {"wrong type": wrong, "zero": 0, "negative": -3, "huge": 10**12, "huge float": 1e12, "null": None}
    if isinstance(value, list):
        out.update({"empty": [], "one more": [*value, value[-1]] if value else [1]})
    return out


def edited(raw: dict, path: tuple, value: Any) -> dict:
    raw = copy.deepcopy(raw)
    node = raw
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return raw


def cases(raw: dict) -> list[tuple[tuple, str, Any]]:
    out = [(path, name, value) for path in leaves(raw) for name, value in mutations(_get(raw, path)).items()]
    out += [((*path, "no_such_key"), "unknown key", 1) for path in blocks(raw)]
    return out


def _get(raw: dict, path: tuple) -> Any:
    for part in path:
        raw = raw[part]
    return raw


class Stage:
    """What the stages run before their first optimizer step, on the tiny data; each distinct config once."""

    def __init__(self, tmp: Path, data, data_raw: dict):
        self.tmp, self.data, self.data_raw, self.done, self.runs = tmp, data, data_raw, set(), 0

    def __call__(self, cfg: StudyConfig, path: tuple, original: StudyConfig) -> None:
        top = path[0]
        if top == "data":
            key = ("data", repr(cfg.data))
            if key not in self.done:
                self.done.add(key)
                out = self.tmp / f"prepared-{len(self.done)}"
                prepare(cfg.data, cfg.seed, out)
                load(out)
            return
        if top == "evaluator":
            from pipeline.evaluate.evaluator import train_evaluator

            d = self.tmp / f"evaluator-{self.runs}"
            self.runs += 1
            train_evaluator(cfg, self.data, d / "evaluator.pt", d / "run", d / "evaluator.ckpt", max_steps=1)
            return
        if top in PARAMS_BLOCK.values():
            names = [path[1]] if len(path) > 1 else list(original.models())
        elif top in ("train", "budget", "seed", "seeds", "device"):
            names = list(SHARED)
        else:
            return  # evaluate.*, tracking.*: read after training, validated above
        for name in names:
            mcfg = cfg.model(name)  # a model removed from params.yaml: one clean line here
            for seed in cfg.seeds:
                key = (name, seed, repr(mcfg), repr(cfg.train), repr(cfg.budget), cfg.device)
                if key in self.done:
                    continue
                self.done.add(key)
                self.runs += 1
                paths = TrainPaths.for_model(f"{name}-{seed}", self.tmp / f"run-{self.runs}")
                train_model(name, cfg.with_seed(seed), self.data, paths, max_steps=1)


@pytest.fixture(scope="module")
def stage(tmp_path_factory, tiny_data, tiny_raw):
    return Stage(tmp_path_factory.mktemp("fuzz"), tiny_data, tiny_raw)


def _check(raw: dict, path: tuple, stage: Stage, original: StudyConfig) -> tuple[str, str]:
    """('ok', ''), or where the edit was refused ('config' or 'stage') and the one-line error; any other exception
    fails the test with its traceback."""
    where = "config"
    try:
        cfg = parse_config(raw)
        where = "stage"
        stage(cfg, path, original)
    except StudyError as exc:
        message = str(exc)
        assert "\n" not in message and message.strip(), message
        return where, message
    return "ok", ""


def test_the_four_values_of_the_issue_give_one_line(tiny_raw):
    for path, value, expected in [
        (("gans", "progan", "channels"), [64, 0, 16, 8], "gans.progan.channels.1: Input should be greater than or equal to 1"),
        (("gans", "progan", "channels"), [64, -1, 16, 8], "gans.progan.channels.1: Input should be greater than or equal to 1"),
        (("autoencoders", "conv", "channels"), [0, 32, 64], "autoencoders.conv.channels.0: Input should be greater"),
        (("gans", "stylegan", "coarse_layers"), 99, "gans.stylegan.coarse_layers: 1 to 7"),
    ]:
        with pytest.raises(StudyError, match=None) as err:
            parse_config(edited(tiny_raw, path, value))
        assert str(err.value) == f"params.yaml: {expected}" or str(err.value).startswith(f"params.yaml: {expected}")


@pytest.mark.parametrize("top", ["seed", "seeds", "device", "data", "budget", "train", "evaluator", "evaluate",
                                 "tracking", "autoencoders", "gans", "no_such_key"])
def test_every_careless_edit_works_or_is_one_clean_line(top, tiny_raw, stage):
    """Per top-level block, so that a failure names where to look; each case's key and value are in the message."""
    original = parse_config(tiny_raw)
    mine = [c for c in cases(tiny_raw) if c[0][0] == top]
    assert mine, f"no leaves under {top}"
    outcomes = {}
    for path, name, value in mine:
        raw = edited(tiny_raw, path, value)
        try:
            outcomes[(path, name)] = _check(raw, path, stage, original)
        except Exception as exc:  # noqa: BLE001 -- the point of the test: name the case, then fail
            raise AssertionError(f"{'.'.join(map(str, path))} = {value!r} ({name}): "
                                 f"{type(exc).__name__}: {exc}") from exc
    assert any(where != "ok" for where, _ in outcomes.values()), f"no edit under {top} was refused"
    for (path, name), (where, message) in outcomes.items():
        if where == "config":  # names the key: params.yaml: gans.progan.channels.1: ...
            assert message.startswith("params.yaml: " + ".".join(map(str, path[:1]))), message
        if name == "unknown key":  # names the block and what is allowed there
            assert where == "config" and "unknown" in message and "no_such_key" in message, message


def test_fuzz_covers_every_leaf_and_list_element(tiny_raw):
    paths = {c[0] for c in cases(tiny_raw)}
    assert ("gans", "progan", "channels", 1) in paths and ("evaluate", "few_labels", 1) in paths
    assert ("gans", "stylegan", "coarse_layers") in paths and ("autoencoders", "no_such_key") in paths
    assert len(list(itertools.islice(leaves(tiny_raw), 10_000))) > 200
