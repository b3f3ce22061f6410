"""Great Expectations gates: each suite passes on good data and fails, naming the failing
expectation, on data built to break it."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from helpers import jpeg_bytes

from blip_core.config.pipeline import CapFiltConfig, ValidateConfig
from blip_core.data.shards import ShardWriter
from flows import validation as v
from flows.stages import stage_validate


def test_raw_suite_passes_on_the_world_web_split(tiny_world, tmp_path):
    report = stage_validate("raw", tiny_world / "web", out_file=tmp_path / "raw.json", gx_root=tmp_path)
    assert report["success"]
    names = {r["expectation"] for r in report["suites"][0]["results"]}
    assert {"expect_column_mean_to_be_between", "expect_column_values_to_be_between"} <= names
    site = tmp_path / "gx" / "uncommitted" / "data_docs" / "local_site"
    assert (site / "index.html").is_file()
    _assert_renders_offline(site)
    page = next((site / "validations" / "raw_web").rglob("*.html")).read_text()
    assert "Data asset: None" not in page and "__none__" not in str(next((site / "validations").rglob("*.html")))
    assert str(tiny_world / "web") in page or "web" in page.split("Data asset:")[1][:300]
    assert "blip-validate" in str(next((site / "validations" / "raw_web").rglob("*.html")))


def _assert_renders_offline(site):
    """Every script, stylesheet and image a page loads is a file in the site (no CDN), and the index's
    table and status icons have their code (bootstrap-table, Font Awesome and its fonts)."""
    import re

    pages = list(site.rglob("*.html"))
    assert len(pages) >= 3
    for page in pages:
        html = page.read_text()
        refs = re.findall(r'<script\b[^>]*\bsrc="([^"]+)"', html)
        refs += re.findall(r'<link\b[^>]*rel="stylesheet"[^>]*\bhref="([^"]+)"', html)
        refs += re.findall(r'<img\b[^>]*\bsrc="([^"]+)"', html)
        for ref in refs:
            assert "://" not in ref, f"{page.name} loads {ref} from the network"
            assert (page.parent / ref).resolve().is_file(), f"{page.name}: {ref} missing"
        assert "crossorigin" not in html
    index = (site / "index.html").read_text()
    assert "bootstrap-table.min.js" in index and "css/all.min.css" in index
    assert (site / "static" / "vendor" / "webfonts" / "fa-solid-900.woff2").is_file()


def test_raw_suite_fails_on_spam_and_tiny_images_with_a_readable_report(tmp_path):
    with ShardWriter(tmp_path / "bad", 0, split="web") as w:
        for i in range(20):
            caption = f"https://www.shop.com/img/{i}.jpg" if i % 2 else "a red square"
            w.write(f"web-{i:03d}", jpeg_bytes((32, 32) if i else (8, 8)), [caption], source="web")
    r = subprocess.run(
        [sys.executable, "-m", "flows.cli", "validate", "raw", str(tmp_path / "bad")],
        capture_output=True, text=True, timeout=300, env=os.environ | {"BLIP_GX_ROOT": str(tmp_path)},
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert "FAILED expect_column_mean_to_be_between(column=has_url" in r.stderr
    assert "FAILED expect_column_values_to_be_between(column=min_side" in r.stderr
    assert "FAILED expect_column_proportion_of_unique_values_to_be_between(column=caption" not in r.stderr


def test_validate_from_another_folder_writes_its_context_there_not_into_the_checkout(tiny_world, tmp_path):
    """A user's validation belongs to the user's project: `blip validate` run from a folder roots the GX
    context and Data Docs at that folder (or --gx-root), and leaves the installed checkout alone."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    before = {p: p.stat().st_mtime_ns for p in (repo / "gx").rglob("*") if p.is_file()}
    env = {k: val for k, val in os.environ.items() if k != "BLIP_GX_ROOT"} | {"PYTHONPATH": str(repo)}
    project = tmp_path / "project"
    project.mkdir()
    cmd = [sys.executable, "-m", "flows.cli", "validate", "raw", str(tiny_world / "web")]
    r = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (project / "gx" / "great_expectations.yml").is_file()
    assert (project / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").is_file()
    chosen = tmp_path / "chosen"
    r = subprocess.run([*cmd, "--gx-root", str(chosen)], cwd=project, env=env, capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert (chosen / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").is_file()
    after = {p: p.stat().st_mtime_ns for p in (repo / "gx").rglob("*") if p.is_file()}
    assert after == before  # nothing written into the checkout


def test_capfilt_suites_name_each_broken_expectation(tmp_path):
    cfg, capfilt = ValidateConfig(), CapFiltConfig(threshold=0.5, max_length=20)
    out = pd.DataFrame(
        {
            "key": ["a", "a", "b", "c"],
            "caption": ["x", "x", "a blue circle", " ".join(["word"] * 30)],  # duplicate pair; too-long synthetic
            "num_captions": [2, 2, 1, 1],
            "source": ["web", "web", "web", "synthetic"],
            "itm_prob": [0.9, 0.9, 0.3, 0.8],  # 0.3 kept below the threshold
            "itc_cosine": [0.1, 0.1, 0.2, 0.3],
        }
    )
    out["synthetic_words"] = np.where(out["source"] == "synthetic", out["caption"].str.split().str.len(), np.nan)
    with pytest.raises(v.DataQualityError) as e:
        v.gate([v.run_suite("capfilt_output", v.capfilt_output_suite(cfg, capfilt), out, root=tmp_path)], None)
    msg = str(e.value)
    assert "expect_compound_columns_to_be_unique(column_list=['key', 'caption'])" in msg
    assert "expect_column_values_to_be_between(column=itm_prob, min_value=0.5" in msg
    assert "expect_column_values_to_be_between(column=synthetic_words" in msg
    assert "itc_cosine" not in msg

    sel = _selection(keep=[1, 1, 1, 0], noisy=[1, 1, 0, 0])  # 2 of 3 kept captions are noise, raw web 2 of 4
    suite = v.capfilt_selection_suite(ValidateConfig(keep_rate_max=0.5), v.raw_web_noise(sel))
    report = v.run_suite("capfilt_selection", suite, sel, root=tmp_path)
    failed = {(r["expectation"], r["kwargs"]["column"]) for r in report["results"] if not r["success"]}
    assert failed == {("expect_column_mean_to_be_between", "keep"), ("expect_column_mean_to_be_between", "kept_noisy")}


def _selection(keep: list[int], noisy: list[int | None]) -> pd.DataFrame:
    """A CapFilt selection table of web alt-texts, as `capfilt_tables` reads it."""
    sel = pd.DataFrame({"itm_prob": [0.9, 0.8, 0.7, 0.1][: len(keep)], "itc_cosine": 0.1, "source": "web",
                        "keep": [float(k) for k in keep], "gt_noisy": pd.array(noisy, dtype="boolean")})  # fmt: skip
    sel["kept_noisy"] = sel["gt_noisy"].astype(float).where(sel["keep"].astype(bool) & sel["gt_noisy"].notna())
    sel["raw_web_noisy"] = sel["gt_noisy"].astype(float).where(sel["source"].eq("web"))
    return sel


def test_the_kept_noise_gate_is_relative_to_the_raw_web_pool(tmp_path):
    """A kept set dirtier than the raw pool fails at any noise level; one cleaner passes; the failure says
    both numbers. Without labels (real data) there is no noise expectation."""
    cfg = ValidateConfig(keep_rate_min=0.0, keep_rate_max=1.0)
    dirtier = _selection(keep=[1, 1, 0, 0], noisy=[1, 0, 0, 0])  # kept 0.5 > raw 0.25, though 0.5 is "low"
    assert v.raw_web_noise(dirtier) == 0.25
    with pytest.raises(v.DataQualityError) as e:
        v.gate([v.run_suite("sel", v.capfilt_selection_suite(cfg, 0.25), dirtier, root=tmp_path)], None)
    assert "column=kept_noisy, max_value=0.25" in str(e.value) and "observed 0.5" in str(e.value)
    assert "1 x the raw web pool's noise 0.250" in str(e.value)
    report = v.run_suite("sel", v.capfilt_selection_suite(cfg, 0.25), dirtier, root=tmp_path)
    observed = {r["kwargs"]["column"]: r["observed"] for r in report["results"]}
    assert observed["kept_noisy"] == 0.5 and observed["raw_web_noisy"] == 0.25  # both rates on the page
    cleaner = _selection(keep=[1, 1, 1, 0], noisy=[1, 0, 0, 1])  # kept 1/3 < raw 1/2
    assert v.gate([v.run_suite("sel", v.capfilt_selection_suite(cfg, v.raw_web_noise(cleaner)), cleaner,
                               root=tmp_path)], None)["success"]  # fmt: skip
    loose = ValidateConfig(keep_rate_min=0.0, keep_rate_max=1.0, max_kept_over_raw=2.0)  # kept <= 2 x raw
    assert v.gate([v.run_suite("sel", v.capfilt_selection_suite(loose, 0.25), dirtier, root=tmp_path)], None)["success"]
    unlabelled = _selection(keep=[1, 0], noisy=[None, None])
    assert v.raw_web_noise(unlabelled) is None
    assert v.raw_web_noise(_selection(keep=[0, 0], noisy=[1, 0])) is None  # nothing kept: nothing to bound
    columns = {e.column for e in v.capfilt_selection_suite(cfg, v.raw_web_noise(unlabelled))}
    assert "kept_noisy" not in columns
    with pytest.raises(ValueError, match="max_kept_over_raw"):
        ValidateConfig(max_kept_over_raw=0.0)


def test_the_kept_noise_bound_allows_the_kept_rates_sampling_error(tmp_path):
    """With the number of labelled kept captions, the bound widens by kept_noise_margin_z standard errors
    of a rate at the bound: parity (kept = raw, up to a few captions) passes, a kept set dirtier beyond
    sampling noise fails, z = 0 is the point comparison."""
    cfg = ValidateConfig(keep_rate_min=0.0, keep_rate_max=1.0)
    n = 3000
    margin = 1.96 * (0.383 * 0.617 / n) ** 0.5  # ~0.017
    suite = v.capfilt_selection_suite(cfg, 0.383, n)
    kept = next(e for e in suite if e.column == "kept_noisy")
    assert kept.max_value == pytest.approx(0.383 + margin, abs=1e-6)
    assert "1.96 standard errors of a rate over 3000 kept captions" in kept.notes
    point = next(e for e in v.capfilt_selection_suite(ValidateConfig(kept_noise_margin_z=0.0), 0.383, n)
                 if e.column == "kept_noisy")  # fmt: skip
    assert point.max_value == 0.383
    assert kept.max_value >= 0.386 and 0.383 + 2 * margin > kept.max_value  # parity passes, 2 se over fails
    dirtier = _selection(keep=[1, 1, 0, 0], noisy=[1, 0, 0, 0])  # kept 0.5 over 2 captions: a wide margin
    assert v.gate([v.run_suite("sel", v.capfilt_selection_suite(cfg, 0.25, 2), dirtier, root=tmp_path)], None)[
        "success"
    ]
    assert not v.run_suite("sel", v.capfilt_selection_suite(cfg, 0.25, 200), dirtier, root=tmp_path)["success"]
    with pytest.raises(ValueError, match="kept_noise_margin_z"):
        ValidateConfig(kept_noise_margin_z=-1.0)
