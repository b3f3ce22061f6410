"""What every benchmark writes with `--json`: the machine and a list of figures, each with the
reference it is a ratio against and the goal it is measured against (`benchmarks/report.py` turns
them into reports/benchmarks.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def figure(name: str, value: float, unit: str = "", *, ratio: float | None = None, reference: str = "",
           goal: str = "", met: bool | None = None, note: str = "") -> dict[str, Any]:  # fmt: skip
    """One measured figure; `ratio` is value / reference measured in the same run."""
    return {"name": name, "value": value, "unit": unit, "ratio": ratio, "reference": reference, "goal": goal,
            "met": met, "note": note}  # fmt: skip


def save(path: Path | None, figures: list[dict[str, Any]], **extra: Any) -> None:
    if path is None:
        return
    from blip_core.machine import describe

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": describe(), "figures": figures, **extra}, indent=2, default=str) + "\n")
