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

dvc.yaml's deps are checked against this (tests/test_consistency.py), and a training checkpoint's fingerprint
holds `code_hash` of the same files, so that a checkpoint made by other code is never resumed. Standard library
only: it runs before anything heavy is imported.
"""

from __future__ import annotations

import ast
import hashlib
import os
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


def write_handles(root: Path = HANDLES) -> list[str]:
    """pipeline/models/deps/<model>/: a relative link to each of the model's own files (the folder its stages
    depend on), for every registered model; returns the models whose links changed."""
    changed = []
    wanted = {name: {Path(f).name for f in model_files(name)} for name in registry_modules()}
    for stale in (p for p in (root.iterdir() if root.is_dir() else []) if p.name not in wanted):
        shutil.rmtree(stale)
        changed.append(stale.name)
    for name, names in wanted.items():
        folder = root / name
        have = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        if have == names and all(os.readlink(folder / f) == f"../../{f}" for f in names):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for f in sorted(names):
            (folder / f).symlink_to(f"../../{f}")
        changed.append(name)
    return changed


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
    print(f"{HANDLES.relative_to(ROOT)}: " + (f"rewrote {', '.join(changed)}" if changed else "up to date"))
