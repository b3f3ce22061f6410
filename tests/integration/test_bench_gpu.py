"""The GPU benchmark's code path runs (on CPU, toy sizes): a GPU session spends its minutes measuring,
not debugging the script. Its numbers here mean nothing and are not checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_gpu_runs_end_to_end_at_toy_sizes(tmp_path):
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_gpu.py"), "--device", "cpu", "--quick", "--repeats", "1",
           "--out", str(tmp_path / "gpu")]  # fmt: skip
    r = subprocess.run(cmd, cwd=REPO, env=os.environ | {"PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                       timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((tmp_path / "gpu.json").read_text())
    names = [f["name"] for f in doc["figures"]]
    assert len(names) == 5 and any("pre-train step" in n for n in names) and any("captioning" in n for n in names)
    assert all(f["goal"] for f in doc["figures"][1:])  # every figure after the peak has its goal
    md = (tmp_path / "gpu.md").read_text()
    assert "these numbers mean nothing" in md and "| figure | value |" in md


def test_a_cuda_run_without_cuda_says_so():
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_gpu.py")], cwd=REPO,
                       env=os.environ | {"PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}, capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert r.returncode != 0 and "no CUDA device here" in r.stderr
