"""Resumable training checkpoints: model (momentum encoders, queues and pointer included),
optimizer, scheduler, RNG states and the data position. Writes are atomic (temp file + rename);
the last `keep_last` are kept.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blip_core.fileio import remove_stale_temps, safe_torch_load, torch_save

_NAME = re.compile(r"^ckpt_(\d{8})\.pt$")


def rng_state() -> dict[str, Any]:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: str | Path, state: dict[str, Any], step: int, keep_last: int = 2) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"ckpt_{step:08d}.pt"
    remove_stale_temps(folder, ".ckpt_*.pt.tmp")  # a killed save's leftovers: never read, only space
    torch_save(state, final)  # a crash or a full disk never leaves a half-written checkpoint
    for old in list_checkpoints(folder)[:-keep_last]:
        old.unlink(missing_ok=True)
    return final


def list_checkpoints(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def latest_checkpoint(folder: str | Path) -> Path | None:
    ckpts = list_checkpoints(folder)
    return ckpts[-1] if ckpts else None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    return safe_torch_load(path)
