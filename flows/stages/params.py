"""The params loader the stage functions share: a section as its typed dataclass.

Run through the DAG (`Stage.run`), a stage may read only the params it declares: reading a section
it names neither whole nor by a key raises, so a new knob can never be served stale from a cache
whose key did not include it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from blip_core.config.loader import load_params_section

DEFAULT_PARAMS = Path("params.yaml")
"""Read when a stage is called without a params file (the CLI run from the repository root)."""

_declared: contextvars.ContextVar[tuple[str, tuple[str, ...]] | None] = contextvars.ContextVar("declared", default=None)


class UndeclaredParamsError(RuntimeError):
    """A stage read a params section its DAG entry does not declare."""


@contextlib.contextmanager
def declared_params(stage: str, params: tuple[str, ...]) -> Iterator[None]:
    """Within this block, `section` refuses sections that `params` ("sec" or "sec.key") does not name."""
    token = _declared.set((stage, params))
    try:
        yield
    finally:
        _declared.reset(token)


def section(params: str | Path | None, name: str, cls: type) -> Any:
    """A params section as its dataclass; defaults when no params file is given or present."""
    declared = _declared.get()
    if declared is not None and not any(p == name or p.startswith(name + ".") for p in declared[1]):
        stage, keys = declared
        raise UndeclaredParamsError(
            f"stage {stage} reads params section {name!r} but declares only {', '.join(keys) or 'none'}: "
            f"add it to the stage's `params` in flows/dag.py (its cache key must include it)"
        )
    if params is None:
        params = DEFAULT_PARAMS if DEFAULT_PARAMS.is_file() else None
    return load_params_section(params, name, cls) if params is not None else cls()
