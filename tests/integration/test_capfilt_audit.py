"""The CapFilt audit page: its data matches the selection, it is offline, and in a real browser
(headless Chromium, where installed) its filters, sorting and paging show the right rows."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from blip_core.capfilt import SELECTION, SELECTION_META
from blip_core.capfilt.audit import COLUMNS, DATA_FILE, PAGE_FILE, write_audit
from blip_core.data.reader import iter_samples
from blip_core.data.world.grounding import ground_caption
from blip_core.data.world.scene import Scene

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def audit(tiny_world, tmp_path_factory):
    """A selection over the tiny world's web split (its alt-text and one human-style caption of
    another image per image as the 'synthetic' one, scores drawn at random), and its page."""
    work = tmp_path_factory.mktemp("capfilt_work")
    samples = list(iter_samples(tiny_world / "web"))
    rng = random.Random(0)
    rows = []
    for i, s in enumerate(samples):
        gt = s["meta"]["gt"]
        other = samples[(i + 1) % len(samples)]["captions"][0]
        for cand, (source, caption) in enumerate((("web", s["captions"][0]), ("synthetic", other))):
            p = rng.random()
            rows.append({"key": s["key"], "shard": "00000", "cand": cand, "source": source, "caption": caption,
                         "itm_prob": p, "itc_cosine": rng.uniform(0.5, 1.0),
                         "gt_noise_type": gt["noise_type"] if source == "web" else None,
                         "keep": p >= 0.5})  # fmt: skip
    sel = pd.DataFrame(rows)
    sel.to_parquet(work / SELECTION)
    (work / SELECTION_META).write_text(json.dumps({"policy": "both", "threshold": 0.5, "threshold_mode": "fixed"}))
    summary = write_audit(work, tiny_world / "web", work / "audit")
    scenes = {s["key"]: Scene.from_dict(s["meta"]["gt"]["scene"]) for s in samples}
    return work / "audit", sel, scenes, summary


def _data(page_dir: Path) -> dict:
    text = (page_dir / DATA_FILE).read_text()
    return json.loads(text.removeprefix("window.AUDIT_DATA = ").rstrip().removesuffix(";"))


def test_page_data_is_the_selection_with_ground_truth_and_thumbnails(audit):
    page_dir, sel, scenes, summary = audit
    data = _data(page_dir)
    assert summary["rows"] == len(sel) == len(data["rows"]) and summary["thumbnails"] == sel["key"].nunique()
    assert data["meta"] == {"policy": "both", "threshold": 0.5, "threshold_mode": "fixed", "ground_truth": True}
    assert data["columns"] == list(COLUMNS)
    for row, (_, want) in zip(data["rows"], sel.iterrows(), strict=True):
        key, img, source, caption, itm, _, keep, noise, true, errors = row
        assert (key, source, caption, keep) == (want["key"], want["source"], want["caption"], want["keep"])
        assert itm == pytest.approx(want["itm_prob"], abs=1e-4)
        assert noise == (want["gt_noise_type"] if source == "web" else None)
        g = ground_caption(caption, scenes[key])
        assert true == g.is_true and errors == g.errors
        assert (page_dir / img).stat().st_size > 100
    # offline: nothing on the page loads from the network
    html = (page_dir / PAGE_FILE).read_text()
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", html)


def test_missing_selection_is_one_clear_error(tiny_world, tmp_path):
    with pytest.raises(FileNotFoundError, match="run capfilt select first"):
        write_audit(tmp_path, tiny_world / "web", tmp_path / "audit")


def _dom(page_dir: Path, fragment: str) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom",
           (page_dir / PAGE_FILE).as_uri() + "#" + fragment]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def _rows(dom: str) -> list[dict[str, str]]:
    return [dict(re.findall(r'data-(\w+)="([^"]*)"', tr)) for tr in re.findall(r'<tr class="row"[^>]*>', dom)]


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (Debian: apt-get install chromium)")
def test_filters_sorting_and_paging_in_headless_chromium(audit):
    page_dir, sel, _, _ = audit
    dom = _dom(page_dir, "")
    assert f'data-matches="{len(sel)}"' in dom and len(_rows(dom)) == min(50, len(sel))  # one page in the DOM
    dropped_web = sel[~sel["keep"] & (sel["source"] == "web")]
    dom = _dom(page_dir, "decision=dropped&source=web&sort=itm_asc")
    rows = _rows(dom)
    assert f'data-matches="{len(dropped_web)}"' in dom and rows
    assert all(r["keep"] == "false" and r["source"] == "web" for r in rows)
    itm = [float(r["itm"]) for r in rows]
    assert itm == sorted(itm) and itm[0] == pytest.approx(dropped_web["itm_prob"].min(), abs=1e-4)
    noise = sel[sel["source"] == "web"]["gt_noise_type"].value_counts().index[0]
    dom = _dom(page_dir, f"noise={noise}")
    assert f'data-matches="{(sel["gt_noise_type"] == noise).sum()}"' in dom
    assert {r["noise"] for r in _rows(dom)} == {noise}
    dom = _dom(page_dir, "page=2")  # the second page: rows 51-100 by p(match), high first
    want = sorted(sel["itm_prob"], reverse=True)[50:100]
    assert [float(r["itm"]) for r in _rows(dom)] == pytest.approx(want, abs=1e-4)
