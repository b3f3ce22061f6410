"""The source a stage runs, derived from what its function imports: the code dependencies of both
runners (dvc.yaml's `deps`, the Prefect cache key's code hash).

One file per module, not whole packages, so an edit re-runs only the stages whose functions reach
the edited module; the registry's "module:attr" references count as imports.
"""

from __future__ import annotations

import ast
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from blip_core.fileio import source_hash

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("blip_core", "flows")


def _module_file(module: str) -> Path | None:
    path = REPO.joinpath(*module.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def _imports(tree: ast.AST, package: str) -> set[str]:
    """Every project module a piece of source imports (module level or inside functions)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
    return {m for m in found if m.split(".")[0] in PACKAGES and _module_file(m) is not None}


@functools.cache
def _module_closure(module: str) -> frozenset[str]:
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        f = _module_file(m)
        todo += _imports(ast.parse(f.read_text()), m if f.name == "__init__.py" else m.rpartition(".")[0])
    return frozenset(seen)


def _function_imports(fn: Callable[..., Any]) -> set[str]:
    """The project modules a function imports: its module's top-level imports, the imports in its body
    and in the bodies of the same module's functions it calls (transitively)."""
    module = sys.modules[fn.__module__]
    path = Path(module.__file__)
    tree = ast.parse(path.read_text())
    package = fn.__module__ if path.name == "__init__.py" else fn.__module__.rpartition(".")[0]
    top = ast.Module(body=[n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)], type_ignores=[])
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    found, seen, todo = _imports(top, package), set(), [fn.__name__]
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen.add(name)
        found |= _imports(defs[name], package)
        todo += [n.id for n in ast.walk(defs[name]) if isinstance(n, ast.Name) and n.id in defs]
    return found


def code_of(fn: Callable[..., Any], tasks: tuple[str, ...] = (), evaluates: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The source a stage function runs, one file per module: its own module (a `flows.stages`
    family) and every project module that module imports, transitively; plus the modules the
    registry entries of `tasks` name for training (model class, forward, data, state conversion) and
    of `evaluates` for evaluation too (loader, evaluator), which the stage reaches through the
    registry rather than an import. Per function, not per module: a stage does not depend on what
    its module's other stage functions import. A package's `__init__.py` counts where it is imported."""
    from blip_core.registry import get_task

    modules = {fn.__module__}
    for m in _function_imports(fn):
        modules |= _module_closure(m)
    named = [m for t in tasks for m in get_task(t).train_modules]
    named += [m for t in evaluates for m in get_task(t).modules]
    for m in named:
        if m.split(".")[0] in PACKAGES and _module_file(m) is not None:
            modules |= _module_closure(m)
    files = [_module_file(m) for m in modules]
    files += [f.parent / name for f in list(files) for name in _code_files(f)]
    return tuple(sorted(str(f.relative_to(REPO)) for f in files))


@functools.cache
def _code_files(module_file: Path) -> tuple[str, ...]:
    """The files beside a module that are part of its code (a page template, ...): its top-level
    `CODE_FILES = ("name", ...)`, so that editing one re-runs the stages that run the module."""
    for node in ast.parse(module_file.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "CODE_FILES" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    return ()


def code_hash(paths: tuple[str, ...], *, root: str | Path | None = None) -> str:
    """Content hash of source files under `root` (the repository; folders: every .py and .html below
    them; a missing path is skipped): a stage's code deps, or the whole code base (flows.versioning.code_hash)."""
    return source_hash(paths, root=root if root is not None else REPO)
