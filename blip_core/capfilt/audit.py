"""The CapFilt audit page: why each caption was kept or dropped, as one static, offline HTML page.

`write_audit(work_dir, web_dir, out_dir)` reads the selection (`selection.parquet`: every web and
synthetic caption with its p(match), ITC cosine and decision; `selection.json`: the policy and the
threshold) and the web shards (the images; for world data the ground-truth scene), and writes

- `index.html`: the page (its script and style inline; nothing loads from the network);
- `data.js`: the rows, loaded by a <script> tag so the page works from file:// (a browser will not
  fetch a JSON file next to a local page);
- `img/<key>.jpg`: one thumbnail per web image (at most `thumb_px` a side), loaded lazily.

The page filters by decision, source, noise type and (world data) whether the caption is true of
the scene, searches caption text, sorts by p(match) or ITC, and shows one page of rows at a time,
so a pool of 100k images keeps the page fast (the rows are data; only one page is in the DOM). Its
state lives in the URL fragment (`#decision=dropped&noise=spam&sort=itm_asc&page=2`), so a view can
be linked. The ground truth (noise type, grounding errors) is shown, never used: it is evaluation.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from blip_core.capfilt import AUDIT_PAGE, SELECTION, SELECTION_META

logger = logging.getLogger(__name__)

PAGE_FILE, DATA_FILE, IMAGE_DIR = AUDIT_PAGE, "data.js", "img"
COLUMNS = ("key", "img", "src", "cap", "itm", "itc", "keep", "noise", "truth", "errs")
"""A row of `data.js`, in order (the page reads the names from `data.js` too): key, image file,
source, caption, p(match), ITC cosine, kept, noise type, true of the scene, grounding errors."""
CODE_FILES = ("audit_page.html",)
"""The page itself, beside this module (flows.codedeps counts it as this module's code)."""


def write_audit(work_dir: str | Path, web_dir: str | Path, out_dir: str | Path, *, thumb_px: int = 128) -> dict:
    """Write the audit page of the selection in `work_dir` over the images of `web_dir` to `out_dir`
    (the page itself: `audit_page.html` beside this module). Returns counts: rows, images,
    thumbnails written, kept captions, unreadable samples skipped."""
    import pandas as pd

    from blip_core.data.reader import ReadStats, iter_samples

    work_dir, out_dir = Path(work_dir), Path(out_dir)
    sel_file, meta_file = work_dir / SELECTION, work_dir / SELECTION_META
    for f in (sel_file, meta_file):
        if not f.is_file():
            raise FileNotFoundError(f"capfilt audit: {f} not found (run capfilt select first)")
    if not Path(web_dir).is_dir():
        raise FileNotFoundError(f"capfilt audit: web folder not found: {web_dir}")
    sel = pd.read_parquet(sel_file)
    meta = json.loads(meta_file.read_text())
    (out_dir / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    wanted = set(sel["key"])
    scenes: dict[str, Any] = {}
    stats = ReadStats()
    written = 0
    for s in tqdm(iter_samples(web_dir, stats=stats), total=len(wanted), desc="capfilt audit: thumbnails"):
        if s["key"] not in wanted:
            continue
        img = s["image"].convert("RGB")
        img.thumbnail((thumb_px, thumb_px))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        (out_dir / IMAGE_DIR / f"{_file_name(s['key'])}.jpg").write_bytes(buf.getvalue())
        written += 1
        gt = (s.get("meta") or {}).get("gt") or {}
        if "scene" in gt:
            scenes[s["key"]] = gt["scene"]
    rows = _rows(sel, scenes)
    data = {
        "meta": {
            "policy": meta.get("policy"),
            "threshold": meta.get("threshold"),
            "threshold_mode": meta.get("threshold_mode"),
            "ground_truth": bool(scenes),
        },
        "columns": COLUMNS,
        "rows": rows,
    }
    (out_dir / DATA_FILE).write_text("window.AUDIT_DATA = " + json.dumps(data, separators=(",", ":")) + ";\n")
    (out_dir / PAGE_FILE).write_text(Path(__file__).with_name(CODE_FILES[0]).read_text())
    summary = {
        "page": str(out_dir / PAGE_FILE),
        "rows": len(rows),
        "images": len(wanted),
        "thumbnails": written,
        "kept": int(sel["keep"].sum()),
        "read_skipped": stats.num_skipped,
    }
    if written < len(wanted):
        logger.warning("capfilt audit: %d of %d selected images not found in %s (shown without a thumbnail)",
                       len(wanted) - written, len(wanted), web_dir)  # fmt: skip
    logger.info("capfilt audit: %s", summary)
    return summary


def _file_name(key: str) -> str:
    """A thumbnail's file name: the sample key with anything but [A-Za-z0-9._-] replaced."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in key)


def _rows(sel, scenes: dict[str, Any]) -> list[list[Any]]:
    """One row per caption, its fields in `COLUMNS` order (true of the scene: None without ground truth)."""
    from blip_core.data.world.grounding import ground_caption
    from blip_core.data.world.scene import Scene

    parsed = {k: Scene.from_dict(sc) for k, sc in scenes.items()}
    noise = sel["gt_noise_type"] if "gt_noise_type" in sel else [None] * len(sel)
    out = []
    for r, nt in zip(sel.itertuples(index=False), noise, strict=True):
        scene = parsed.get(r.key)
        true, errors = None, []
        if scene is not None:
            g = ground_caption(str(r.caption), scene)
            true, errors = bool(g.is_true), list(g.errors)
        web_noise = nt if r.source == "web" and isinstance(nt, str) else None
        out.append([r.key, f"{IMAGE_DIR}/{_file_name(r.key)}.jpg", r.source, str(r.caption),
                    round(float(r.itm_prob), 4), round(float(r.itc_cosine), 4), bool(r.keep), web_noise,
                    true, errors])  # fmt: skip
    return out
