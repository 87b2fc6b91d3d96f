"""Which project source files a stage's command imports, read from the code itself (no hand-kept list).

DVC reruns a stage when one of its deps changes, so a file a stage imports but does not list is a result that
goes stale. `command_files("train_gan")` walks the imports of `python -m stages train-gan` statically:

- every module of the `stages` package and of `pipeline` counts with all its imports, module-level and inside
  functions (a lazy import runs as soon as the function does);
- `stages/commands.py` is the exception: it holds every command, so only its module-level imports and those
  of the one command (and of the module-level helpers it calls) count;
- `from a.b import c` imports `a`, `a.b` and, where `c` is a module, `a.b.c`.

A model's own code is imported by name (its `module` in pipeline/models/registry.toml, when the model is asked for), so it
is not among a command's static imports: `model_files(name)` is the closure of the model's file less the
registry's own (for `stylegan`: stylegan.py and the progan.py it builds on). DVC cannot look a model's files up by
its name inside a `matrix` stage, so `pipeline/models/deps/<name>/` holds a link to each of them, and the stages of
`<name>` depend on that folder: an edit to progan.py reruns the ProGAN variants and StyleGAN, and no other model.
`python -m pipeline.code` (re)writes the links.

A command's own files are many (25 for train-gan), and DVC rewrites dvc.lock, every entry of every stage, after each
stage it runs: listed one by one they made most of the lock file and of that work. So each command's files are
linked too, under `pipeline/deps/<command>/` (`pipeline__train__gan.py` -> pipeline/train/gan.py), and a stage
depends on that one folder: DVC hashes the files the links point to, so an edit to any of them reruns the stage as
before, and the lock holds one entry instead of 25.

dvc.yaml's deps are checked against this (tests/test_consistency.py), and a training checkpoint's fingerprint
holds `code_hash` of the same files, so that a checkpoint made by other code is never resumed. Standard library
only: it runs before anything heavy is imported.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import shutil
import tomllib
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages")
COMMANDS = "stages.commands"
REGISTRY = "pipeline.models"
REGISTRY_TABLE = ROOT / "pipeline" / "models" / "registry.toml"  # one table per model
HANDLES = ROOT / "pipeline" / "models" / "deps"  # deps/<model>/<file>.py -> ../../<file>.py
COMMAND_HANDLES = ROOT / "pipeline" / "deps"  # deps/<command>/pipeline__train__gan.py -> ../../../pipeline/train/gan.py


def module_file(name: str) -> Path | None:
    """pipeline.models -> pipeline/models/__init__.py, pipeline.io -> pipeline/io.py; None if not ours."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


@lru_cache(maxsize=None)
def _tree(name: str) -> ast.Module:
    path = module_file(name)
    assert path is not None, name
    return ast.parse(path.read_text(), str(path))


def _with_parents(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1) if module_file(".".join(parts[:i]))}


def _imported(nodes: list[ast.AST], module: str) -> set[str]:
    """Project modules that the import statements among `nodes` (searched recursively) load."""
    package = module if module_file(module).name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in (n for top in nodes for n in ast.walk(top)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found |= _with_parents(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(anchor + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found |= _with_parents(source)
            for alias in node.names:
                if module_file(f"{source}.{alias.name}"):
                    found |= _with_parents(f"{source}.{alias.name}")
    return found


def _module_imports(name: str) -> set[str]:
    tree = _tree(name)
    if name == COMMANDS:  # module level only; each command adds its own (command_modules)
        return _imported([n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))], name)
    return _imported([tree], name)


def _closure(start: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_module_imports(name) - seen)
    return seen


def command_modules(command: str) -> set[str]:
    """Every project module `python -m stages <command>` imports (command: the function's name, train_gan)."""
    tree = _tree(COMMANDS)
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    if command not in functions:
        raise KeyError(f"no command function '{command}' in stages/commands.py")
    used, todo = set(), [command]
    while todo:  # the command and the module-level helpers it calls
        fn = todo.pop()
        used.add(fn)
        names = {n.id for n in ast.walk(functions[fn]) if isinstance(n, ast.Name)}
        todo.extend(n for n in names & functions.keys() if n not in used)
    start = {"stages", "stages.__main__", COMMANDS} | _imported([functions[f] for f in sorted(used)], COMMANDS)
    return _closure(start)


@lru_cache(maxsize=None)
def registry_modules() -> dict[str, str]:
    """Each registered model's module, read from the registry's table: {"progan_no_growing": "pipeline.models.progan"}."""
    table = tomllib.loads(REGISTRY_TABLE.read_text())
    return {name: f"{REGISTRY}.{entry['module']}" for name, entry in table.items()}


def model_modules(name: str) -> set[str]:
    """The project modules model `name` adds to what importing the registry loads."""
    return _closure({registry_modules()[name]}) - _closure({REGISTRY})


def model_files(name: str) -> list[str]:
    return files(model_modules(name))


def _sync_links(folder: Path, links: dict[str, str]) -> bool:
    """`folder` holding exactly `links` (name -> relative target); True if anything changed."""
    have = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    if have == set(links) and all(os.readlink(folder / name) == target for name, target in links.items()):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name, target in sorted(links.items()):
        (folder / name).symlink_to(target)
    return True


def _sync_folders(root: Path, wanted: dict[str, dict[str, str]]) -> list[str]:
    changed = []
    for stale in (p for p in (root.iterdir() if root.is_dir() else []) if p.name not in wanted):
        shutil.rmtree(stale)
        changed.append(stale.name)
    return changed + [name for name, links in wanted.items() if _sync_links(root / name, links)]


def stage_commands() -> list[str]:
    """The commands dvc.yaml's stages run (`train_gan` for `python -m stages train-gan ...`), read from its cmds."""
    text = (ROOT / "dvc.yaml").read_text()
    return sorted({c.replace("-", "_") for c in re.findall(r"cmd: python -m stages ([a-z][a-z-]*)", text)})


def command_links(command: str) -> dict[str, str]:
    """pipeline/deps/<command>/'s links: one per file the command imports, named by its path."""
    return {f.replace("/", "__"): f"../../../{f}" for f in command_files(command)}


def write_handles(root: Path = HANDLES, commands_root: Path = COMMAND_HANDLES) -> list[str]:
    """pipeline/models/deps/<model>/: a relative link to each of the model's own files, for every registered
    model; pipeline/deps/<command>/: one to each file of each stage command. Returns the folders whose links
    changed."""
    models = {name: {Path(f).name: f"../../{Path(f).name}" for f in model_files(name)} for name in registry_modules()}
    commands = {command: command_links(command) for command in stage_commands()}
    return _sync_folders(root, models) + [f"deps/{c}" for c in _sync_folders(commands_root, commands)]


def files(modules: set[str]) -> list[str]:
    """Repository-relative paths of modules, sorted."""
    return sorted(module_file(m).relative_to(ROOT).as_posix() for m in modules)


def command_files(command: str, model: str | None = None) -> list[str]:
    """The files `python -m stages <command> [model]` imports: the command's own and, given a model, the model's."""
    return files(command_modules(command) | (model_modules(model) if model else set()))


def code_hash(paths: list[str]) -> str:
    """A hash of the files' contents (and names): any edit to any of them changes it."""
    h = hashlib.sha256()
    for rel in sorted(paths):
        h.update(rel.encode() + b"\0" + (ROOT / rel).read_bytes() + b"\0")
    return h.hexdigest()[:16]


if __name__ == "__main__":
    changed = write_handles()
    print("dependency links: " + (f"rewrote {', '.join(changed)}" if changed else "up to date"))
