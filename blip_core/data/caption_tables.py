"""Per-caption feature tables that the data-quality gates (Great Expectations, in flows/) check.

Plain pandas: this module computes features; the expectations and their thresholds live in the
suites. Reading goes through the guarded reader, so undecodable images are rows with
`decoded=False` (and their skip reason) instead of silent losses.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pandas as pd

from blip_core.config.data import ReaderConfig
from blip_core.data.reader import ReadStats, iter_samples

URL_RE = re.compile(r"https?://|www\.|\b[\w-]+\.(?:com|net|org|io)\b", re.I)
HTML_RE = re.compile(r"<[^>]+>|&[a-z]+;|&#\d+;", re.I)
FILENAME_RE = re.compile(
    r"\b[\w-]+\.(?:jpe?g|png|gif|bmp|webp|tiff?)\b|^(?:img|dsc|dscn|photo|screenshot)[_ -]?\d+", re.I
)
BOILERPLATE_RE = re.compile(
    r"click here|stock (?:photo|image)|royalty free|all rights reserved|buy now|free shipping|best price|"
    r"order today|download|wallpaper|^(?:image|photo|picture|untitled(?: design)?|thumbnail|default image|view|"
    r"no description available|nice|cool picture|wow|new post|artwork|my favorite|look at this)$",
    re.I,
)


def caption_features(captions: pd.Series) -> pd.DataFrame:
    text = captions.fillna("").astype(str)
    non_space = text.str.replace(r"\s", "", regex=True)
    letters = non_space.str.count(r"[A-Za-z]")
    return pd.DataFrame(
        {
            "caption_chars": text.str.len(),
            "caption_words": text.str.split().str.len(),
            "has_url": text.str.contains(URL_RE),
            "has_html": text.str.contains(HTML_RE),
            "has_filename": text.str.contains(FILENAME_RE),
            "is_boilerplate": text.str.strip().str.contains(BOILERPLATE_RE),
            "alpha_ratio": (letters / non_space.str.len().clip(lower=1)).astype(float),
        },
        index=captions.index,
    )


def raw_caption_table(folder: str | Path, *, reader_cfg: ReaderConfig | None = None) -> pd.DataFrame:
    """One row per caption of a raw shard folder, plus one row per sample the reader had to skip."""
    # min_image_side=1: the gate, not the reader, decides what is too small here
    cfg = dataclasses.replace(reader_cfg or ReaderConfig(), min_image_side=1)
    stats = ReadStats()
    rows = []
    for s in iter_samples(folder, stats=stats, reader_cfg=cfg):
        w, h = s["image"].size
        for c in s["captions"]:
            rows.append({"key": s["key"], "caption": c, "decoded": True, "min_side": min(w, h), "skip_reason": None})
    for (shard, reason), n in sorted(stats.skipped.items()):
        rows += [
            {"key": f"{shard}:skipped", "caption": None, "decoded": False, "min_side": 0, "skip_reason": reason}
        ] * n
    df = pd.DataFrame(rows, columns=["key", "caption", "decoded", "min_side", "skip_reason"])
    return pd.concat([df, caption_features(df["caption"])], axis=1)


def capfilt_output_table(folder: str | Path) -> pd.DataFrame:
    """One row per kept caption of a bootstrapped shard folder, with its provenance."""
    rows = []
    stats = ReadStats()
    for s in iter_samples(folder, stats=stats):
        prov = s["meta"].get("provenance") or [{}] * len(s["captions"])
        if len(prov) != len(s["captions"]):
            raise ValueError(
                f"{folder}: {s['key']} has {len(s['captions'])} captions but {len(prov)} provenance records"
            )
        for c, p in zip(s["captions"], prov, strict=True):
            rows.append(
                {
                    "key": s["key"],
                    "caption": c,
                    "num_captions": len(s["captions"]),
                    "source": p.get("source"),
                    "itm_prob": p.get("itm_prob"),
                    "itc_cosine": p.get("itc_cosine"),
                }
            )
    if stats.num_skipped:
        raise ValueError(f"{folder}: CapFilt output has unreadable samples: {stats.by_reason()}")
    df = pd.DataFrame(rows, columns=["key", "caption", "num_captions", "source", "itm_prob", "itc_cosine"])
    return pd.concat([df, caption_features(df["caption"])], axis=1)
