"""Load: CapFilt over a web pool 10x the make-run size (25,000 images), against 1x in the same run.
Peak memory stays flat (the pipeline streams shards) and every web sample is scored once and either
kept or dropped; the throughput is the benchmark's to report (a timing is no test on a shared CPU).
Slow (~6 min on 2 CPUs): `make test-slow`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_capfilt_at_10x_the_make_run_pool_holds_memory_and_scores_every_sample_once(tmp_path):
    out = tmp_path / "scale.json"
    bench = REPO / "benchmarks" / "bench_capfilt_scale.py"
    r = subprocess.run([sys.executable, str(bench), "--scales", "1", "10", "--json", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=2400)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    one, ten = json.loads(out.read_text())["rows"]
    assert ten["web_images"] == 10 * one["web_images"] == 25_000
    for row in (one, ten):
        assert row["scored_once"]  # every web sample scored exactly once
        assert row["written_web"] + row["dropped_web"] == row["web_images"]  # and kept or dropped
        assert row["written_web"] == row["kept_images"]
    assert ten["peak_rss_mb"] <= 1.25 * one["peak_rss_mb"], (one["peak_rss_mb"], ten["peak_rss_mb"])
