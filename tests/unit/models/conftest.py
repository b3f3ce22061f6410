from __future__ import annotations

import pytest
import torch
from helpers import micro_config

from blip_core.models.blip.config import ModelConfig


@pytest.fixture
def cfg() -> ModelConfig:
    torch.manual_seed(0)
    return micro_config()
