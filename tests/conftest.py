"""Shared fixtures: a tiny embedded world built once per session, and helpers to write raw tars."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import tiny_world_config

from blip_core.data.world.generate import generate_world


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A generated world (~300 images) shared by read-only tests."""
    out = tmp_path_factory.mktemp("world")
    generate_world(tiny_world_config(), out, progress=False)
    return out


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need CUDA: skipped where there is none (CI, the 2-CPU machines)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (a GPU machine: benchmarks/gpu/run.sh)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
