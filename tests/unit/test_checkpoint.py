"""Checkpoint files are read as tensors only: a pickle that would run code is refused, in one line
naming the file, before anything of it runs."""

from __future__ import annotations

import os

import pytest
import torch

from blip_core.fileio import UnsafeCheckpointError, safe_torch_load
from blip_core.models.blip.convert_official import load_official_state


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))  # would create a folder if it ever ran


def test_a_pickle_that_runs_code_is_refused_with_one_line_naming_the_file(tmp_path):
    marker = tmp_path / "it-ran"
    evil = tmp_path / "model_base.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "payload": _RunsCode(str(marker))}, evil)
    for load in (safe_torch_load, load_official_state):
        with pytest.raises(UnsafeCheckpointError) as e:
            load(evil)
        msg = str(e.value)
        assert str(evil) in msg and "\n" not in msg and "makedirs" in msg
    assert not marker.exists()


def test_tensor_checkpoints_load(tmp_path):
    ok = tmp_path / "ok.pth"
    torch.save({"model": {"w": torch.arange(3.0)}, "step": 7}, ok)
    assert safe_torch_load(ok)["step"] == 7
    assert torch.equal(load_official_state(ok)["w"], torch.arange(3.0))
