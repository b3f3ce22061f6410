"""The learning benchmark runs end to end (micro world, a few steps): its figures are the README's
evidence that BLIP pre-training keeps the vision start, so the script must not rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import micro_params

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # ~50 s on 2 CPUs: a micro world, a vision start and two pre-trainings
def test_bench_learning_reports_every_model(tmp_path):
    params = micro_params(tmp_path / "params.yaml")
    out = tmp_path / "learning.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_learning.py"), "--params", str(params), "--steps", "3",
           "--vision-steps", "3", "--out", str(out)]  # fmt: skip
    r = subprocess.run(cmd, cwd=REPO, env=os.environ | {"PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                       timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(out.read_text())
    for name in ("untrained", "vision_start", "blip_from_start", "blip_from_scratch"):
        assert 0.0 <= doc[name]["probe"]["image"]["test"]["shape"]["f1"] <= 1.0, name
    assert "does BLIP pre-training keep shape?" in r.stdout
