"""Per-shard CapFilt steps: caption, filter (score), select, reshard.

Files (under one CapFilt work folder):
- `captions/{shard}.{hash}.parquet`: synthetic captions, one row per (image, sample index).
- `scores/{shard}.{hash}.parquet`: the filter's ITM p(match) and ITC cosine for the web caption
  and every synthetic caption of every image (`cand` 0 is the web caption).
- `selection.parquet`: every scored candidate with its `keep` decision (re-runs in seconds).
- `shards/`: the bootstrapped webdataset (human split unfiltered, then the kept web images).

`hash` covers the input shard's bytes, the checkpoint, the step's config and the seed, so a changed
input never reuses a stale file. Columns prefixed `gt_` are the world's ground truth, copied for
quality reports only: selection never reads them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from blip_core.capfilt.confidence import AttributeConfidence
from blip_core.config.pipeline import CapFiltConfig
from blip_core.data.reader import ReadStats, build_pipeline, iter_samples
from blip_core.data.shards import ShardWriter
from blip_core.data.transforms import eval_transform
from blip_core.data.world.grounding import Scene, ground_caption
from blip_core.fileio import atomic_path, digest
from blip_core.machine import out_of_memory_hint, uses_bf16
from blip_core.models.common.generate import GenerationConfig, caption_images

logger = logging.getLogger(__name__)

CAPTION_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("sample", pa.int32(), nullable=False),
        pa.field("caption", pa.string(), nullable=False),
        pa.field("confidence", pa.float32(), nullable=False),
    ]
)
"""`confidence`: the captioner's confidence in the caption's least sure attribute word
(blip_core.capfilt.confidence)."""
SCORE_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("cand", pa.int32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("caption", pa.string(), nullable=False),
        pa.field("itm_prob", pa.float32(), nullable=False),
        pa.field("itc_cosine", pa.float32(), nullable=False),
        pa.field("confidence", pa.float32()),
        pa.field("gt_noise_type", pa.string()),
        pa.field("gt_noisy", pa.bool_()),
        pa.field("gt_attributes", pa.string()),
    ]
)
"""`confidence`: synthetic captions only, the captioner's (CAPTION_SCHEMA). `gt_attributes`: synthetic
captions only, the grounding checker's per-attribute tally as JSON ({attribute: [mentions, true
mentions]}), for CapFilt quality by attribute."""


# ------------------------------------------------------------------------------------------------
# identities: what a per-shard output depends on


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read once per (path, size, mtime): the caption, filter and select
    steps each name their outputs by the same shard and caption-file hashes."""
    st = os.stat(path)
    return _file_sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _file_sha256(path: str, size: int, mtime_ns: int, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def checkpoint_id(model_dir: str | Path) -> str:
    """A model checkpoint's identity: the hash of its weights file (first 12 hex digits)."""
    return file_sha256(Path(model_dir) / "model.safetensors")[:12]


def step_hash(**parts: Any) -> str:
    """A step's output name: a digest of everything that determines the output (16 hex digits)."""
    return digest(parts, 16)


def shard_seed(seed: int, shard: str) -> int:
    """Sampling seed of one shard: independent of which shards ran before, so resume is exact."""
    return int.from_bytes(hashlib.blake2b(f"{seed}/{shard}".encode(), digest_size=8).digest(), "little") >> 1


def generation_config(cfg: CapFiltConfig) -> GenerationConfig:
    return GenerationConfig(
        method="nucleus",
        top_p=cfg.top_p,
        max_length=cfg.max_length,
        min_length=cfg.min_length,
        repetition_penalty=cfg.repetition_penalty,
        num_return_sequences=cfg.num_captions,
    )


def _write_table(rows: list[dict[str, Any]], schema: pa.Schema, path: Path) -> Path:
    """Atomic: a killed run never leaves a file that a re-run would take for finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
    return path


def _batches(shard: Path, batch_size: int, stats: ReadStats):
    """Lists of decoded samples of one shard, in order, through the guarded reader."""
    return build_pipeline([shard], stats=stats, batch_size=batch_size, split_by_node=False, split_by_worker=False)


def _images(batch: list[dict[str, Any]], image_size: int, device: torch.device) -> torch.Tensor:
    return torch.stack([eval_transform(s["image"], image_size) for s in batch]).to(device)


def _autocast(device: torch.device, *, cpu_bf16: bool = False):
    """bf16 autocast on GPUs; on CPU only when asked (`capfilt.caption_bf16`, not the parity path)."""
    enabled = uses_bf16(device, "on" if cpu_bf16 else "off")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


# ------------------------------------------------------------------------------------------------
# caption


def caption_output(out_dir: str | Path, shard: str | Path, ckpt: str, cfg: CapFiltConfig) -> Path:
    shard = Path(shard)
    gen = asdict(generation_config(cfg))
    # the batch size is part of the identity: the shard's generator draws per batch, so another batch
    # size samples other captions from the same seed
    ident = {"gen": gen, "seed": cfg.seed, "batch": cfg.caption_batch_size, "columns": "confidence"}
    if cfg.caption_bf16:  # other numerics, other captions (kept out of the hash when off: fp32 ids stay)
        ident["bf16"] = True
    h = step_hash(step="caption", shard=file_sha256(shard), ckpt=ckpt, **ident)
    return Path(out_dir) / f"{shard.stem}.{h}.parquet"


@torch.no_grad()
def caption_shard(
    shard: str | Path,
    captioner,
    processor,
    cfg: CapFiltConfig,
    out_dir: str | Path,
    *,
    ckpt: str,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Write `num_captions` nucleus-sampled captions per image of one shard, each with the captioner's
    confidence in its attribute words (blip_core.capfilt.confidence); skip if already done."""
    shard = Path(shard)
    out = caption_output(out_dir, shard, ckpt, cfg)
    if out.is_file():
        return {"shard": shard.stem, "path": str(out), "skipped": True}
    device = device or next(captioner.parameters()).device
    captioner.eval()
    gen = generation_config(cfg)
    generator = torch.Generator(device=device).manual_seed(shard_seed(cfg.seed, shard.stem))
    confidence = AttributeConfidence(processor)
    stats = ReadStats()
    rows: list[dict[str, Any]] = []
    for batch in _batches(shard, cfg.caption_batch_size, stats):
        oom = out_of_memory_hint(f"CapFilt captioning of {shard.name}", "capfilt.caption_batch_size",
                                 cfg.caption_batch_size)  # fmt: skip
        with _autocast(device, cpu_bf16=cfg.caption_bf16), oom:
            embeds = captioner.image_embeds(_images(batch, captioner.cfg.vision.image_size, device))
            caps = caption_images(captioner, processor, None, gen, generator=generator, image_embeds=embeds)
            conf = confidence(captioner, embeds, caps)
        for i, s in enumerate(batch):
            for j in range(cfg.num_captions):
                n = i * cfg.num_captions + j
                row = {"key": s["key"], "shard": shard.stem, "sample": j, "caption": caps[n], "confidence": conf[n]}
                rows.append(row)
    _write_table(rows, CAPTION_SCHEMA, out)
    return {"shard": shard.stem, "path": str(out), "skipped": False, "images": stats.num_ok, "read": stats.to_dict()}


# ------------------------------------------------------------------------------------------------
# filter (score)


def score_output(
    out_dir: str | Path, shard: str | Path, ckpt: str, captions: str | Path | None, source: str = "web"
) -> Path:
    shard = Path(shard)
    cap_hash = file_sha256(captions) if captions else None
    h = step_hash(step="filter", shard=file_sha256(shard), ckpt=ckpt, captions=cap_hash, source=source)
    return Path(out_dir) / f"{shard.stem}.{h}.parquet"


def _ground_truth(meta: dict[str, Any], caption: str, source: str) -> tuple[str | None, bool | None, str | None]:
    """(noise type, noisy, per-attribute tally) from the world's labels: web captions carry a noise
    type; a synthetic caption is noisy when the grounding checker finds it not true of the rendered
    scene (and its tally says which attributes it got right)."""
    gt = meta.get("gt") or {}
    if source == "human":
        return "human", False, None
    if source == "web":
        nt = gt.get("noise_type")
        return nt, (None if nt is None else nt != "clean"), None
    scene = gt.get("scene")
    if scene is None:
        return None, None, None
    g = ground_caption(caption, Scene.from_dict(scene))
    return "synthetic", not g.is_true, json.dumps(g.by_attribute, sort_keys=True)


@torch.no_grad()
def filter_shard(
    shard: str | Path,
    filter_model,
    processor,
    cfg: CapFiltConfig,
    out_dir: str | Path,
    *,
    ckpt: str,
    captions: str | Path | None = None,
    source: str = "web",
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Score each image's own captions (labelled `source`: web alt-text, or human for calibration)
    and its synthetic captions (from `captions`, if given).

    One vision pass per image serves all of its captions: the image embeddings are repeated per
    caption row for the ITM cross-attention and the ITC cosine.
    """
    shard = Path(shard)
    out = score_output(out_dir, shard, ckpt, captions, source)
    if out.is_file():
        return {"shard": shard.stem, "path": str(out), "skipped": True}
    device = device or next(filter_model.parameters()).device
    filter_model.eval()
    synthetic: dict[str, list[tuple[str, float]]] = {}
    if captions is not None:
        for r in pq.read_table(captions).to_pylist():
            synthetic.setdefault(r["key"], []).append((r["caption"], r["confidence"]))
    k = cfg.num_captions if captions is not None else 0
    stats = ReadStats()
    rows: list[dict[str, Any]] = []
    for batch in _batches(shard, cfg.filter_batch_size, stats):
        texts, cands, counts = [], [], []
        for s in batch:
            syn = synthetic.get(s["key"], [])
            if len(syn) != k:
                raise ValueError(f"{captions}: {s['key']} has {len(syn)} synthetic captions, expected {k}")
            own = [(t, source, None) for t in s["captions"]]
            for c, (text, src, conf) in enumerate(own + [(t, "synthetic", conf) for t, conf in syn]):
                texts.append(text)
                cands.append((s, c, text, src, conf))
            counts.append(len(own) + len(syn))
        ids, mask = processor(texts)
        oom = out_of_memory_hint(f"CapFilt filtering of {shard.name}", "capfilt.filter_batch_size",
                                 cfg.filter_batch_size)  # fmt: skip
        with _autocast(device), oom:
            embeds = filter_model.image_embeds(_images(batch, filter_model.cfg.vision.image_size, device))
            embeds = embeds.repeat_interleave(torch.tensor(counts, device=device), dim=0)  # (sum counts, N, D)
            scores = filter_model.score(embeds, ids.to(device), mask.to(device))
        itm, itc = scores["itm_prob"].float().cpu().tolist(), scores["itc_cosine"].float().cpu().tolist()
        for (s, c, text, src, conf), p, cos in zip(cands, itm, itc, strict=True):
            nt, noisy, attributes = _ground_truth(s["meta"], text, src)
            rows.append(
                {
                    "key": s["key"],
                    "shard": shard.stem,
                    "cand": c,
                    "source": src,
                    "caption": text,
                    "itm_prob": p,
                    "itc_cosine": cos,
                    "confidence": conf,
                    "gt_noise_type": nt,
                    "gt_noisy": noisy,
                    "gt_attributes": attributes,
                }
            )
    _write_table(rows, SCORE_SCHEMA, out)
    return {"shard": shard.stem, "path": str(out), "skipped": False, "images": stats.num_ok, "read": stats.to_dict()}


# ------------------------------------------------------------------------------------------------
# select


def read_scores(paths: list[str | Path]) -> pd.DataFrame:
    if not paths:
        raise FileNotFoundError("no CapFilt score files to select from")
    return pd.concat([pq.read_table(p).to_pandas() for p in paths], ignore_index=True)


def resolve_threshold(cfg: CapFiltConfig, calibration: pd.DataFrame | None = None) -> float:
    """The ITM threshold in use: `threshold`, or the `calibration_quantile` of p(match) on clean pairs."""
    if cfg.threshold_mode == "fixed":
        return cfg.threshold
    if calibration is None or calibration.empty:
        raise ValueError("capfilt.threshold_mode=calibrated needs filter scores of a clean split (--calibration DIR)")
    return float(calibration["itm_prob"].quantile(cfg.calibration_quantile))


def select(scores: pd.DataFrame, cfg: CapFiltConfig, *, threshold: float | None = None) -> pd.DataFrame:
    """Add a boolean `keep` column. Policies (BLIP Table 1, plus a DataComp-style baseline):

    - none: every web caption, no synthetic ones (the noisy baseline).
    - filter: web captions with ITM p(match) >= threshold.
    - captioner: every web caption and every synthetic caption.
    - both (CapFilt): web and synthetic captions, each kept when p(match) >= threshold.
    - clip_score: the top `clip_keep_fraction` of web captions by ITC cosine, no synthetic ones.
    - top_k (BLIP-2): each image's `top_k` captions by `top_k_score`, web and synthetic together,
      no threshold (a repeat of a kept caption does not count against k).
    A caption that repeats one its image already keeps is kept once (`repeat`). With `max_synthetic`
    k > 0 an image keeps only its k best synthetic captions by p(match); `over_cap` marks the others.
    With `min_confidence` > 0 a synthetic caption takes part only if the captioner's `confidence` in
    each of its attribute words reaches it (`unsure` marks the others).
    """
    df = scores.copy()
    web, syn = df["source"].eq("web"), df["source"].eq("synthetic")
    df["unsure"] = False
    if cfg.min_confidence > 0:
        if "confidence" not in df:
            raise ValueError("capfilt.min_confidence needs the captioner's confidence: score files written before "
                             "it existed lack it (re-run capfilt_score)")  # fmt: skip
        df["unsure"] = syn & ~df["confidence"].fillna(0.0).ge(cfg.min_confidence)
        syn = syn & ~df["unsure"]
    passes = df["itm_prob"].ge(cfg.threshold if threshold is None else threshold)
    if cfg.policy == "none":
        keep = web
    elif cfg.policy == "filter":
        keep = web & passes
    elif cfg.policy == "captioner":
        keep = web | syn
    elif cfg.policy == "both":
        keep = (web | syn) & passes
    elif cfg.policy == "top_k":  # repeats removed first, so k distinct captions per image
        fresh = ~df.assign(_text=df["caption"].str.strip()).duplicated(["key", "_text"]) & ~df["unsure"]
        rank = df.loc[fresh, cfg.top_k_score].groupby(df.loc[fresh, "key"]).rank(method="first", ascending=False)
        keep = rank.le(cfg.top_k).reindex(df.index, fill_value=False)
    else:  # clip_score: rank, so ties at the cut never keep more than the fraction
        n_keep = int(round(cfg.clip_keep_fraction * int(web.sum())))
        order = df.loc[web, "itc_cosine"].rank(method="first", ascending=False)
        keep = pd.Series(False, index=df.index)
        keep.loc[order.index] = order.le(n_keep)
    # a caption an image already keeps (the captioner wrote its alt-text word for word) is kept once:
    # the first in candidate order (web before synthetic); `repeat` marks the ones dropped
    kept = df[keep.astype(bool)]
    repeat = kept.assign(_text=kept["caption"].str.strip()).duplicated(["key", "_text"])
    df["repeat"] = repeat.reindex(df.index, fill_value=False).astype(bool)
    df["keep"] = (keep.astype(bool) & ~df["repeat"]).astype(bool)
    df["over_cap"] = False
    if cfg.max_synthetic > 0:  # best-of-N: rank each image's kept synthetic captions, first in order on ties
        kept_syn = df[df["keep"] & syn]
        rank = kept_syn["itm_prob"].groupby(kept_syn["key"]).rank(method="first", ascending=False)
        over = rank.gt(cfg.max_synthetic)
        df["over_cap"] = over.reindex(df.index, fill_value=False).astype(bool)
        df["keep"] = df["keep"] & ~df["over_cap"]
    return df


# ------------------------------------------------------------------------------------------------
# reshard


def reshard_shard(
    shard: str | Path,
    out_dir: str | Path,
    index: int,
    *,
    kept: pd.DataFrame | None,
    provenance: dict[str, str],
) -> dict[str, Any]:
    """Copy one input shard into the bootstrapped set.

    With `kept` (rows of `select` with keep=True, for this shard) an image carries its kept captions
    and is dropped when none is kept; without it (the human split) every caption is kept, unfiltered.
    Each caption gets a provenance record: source, filter scores, captioner and filter checkpoint ids.
    """
    shard = Path(shard)
    by_key = {k: g.sort_values("cand") for k, g in kept.groupby("key")} if kept is not None else None
    stats = ReadStats()
    written = dropped = num_captions = 0
    with ShardWriter(out_dir, index, split="bootstrapped") as w:
        for s in iter_samples([shard], stats=stats, keep_bytes=True):
            if by_key is None:
                caps = s["captions"]
                prov = [{"source": "human"} for _ in caps]
                source = "human"
            else:
                g = by_key.get(s["key"])
                if g is None:
                    dropped += 1
                    continue
                caps = g["caption"].tolist()
                prov = [
                    {
                        "source": r.source,
                        "itm_prob": round(float(r.itm_prob), 6),
                        "itc_cosine": round(float(r.itc_cosine), 6),
                        **provenance,
                    }
                    for r in g.itertuples()
                ]
                sources = sorted(set(g["source"]))
                source = sources[0] if len(sources) == 1 else "mixed"
            meta = dict(s["meta"]) | {"provenance": prov, "origin_shard": shard.stem}
            w.write(s["key"], s["image_bytes"], caps, source=source, meta=meta, size=s["image"].size)
            written += 1
            num_captions += len(caps)
    return {
        "shard": shard.stem,
        "out_index": index,
        "written": written,
        "captions": num_captions,
        "dropped": dropped,
        "read": stats.to_dict(),
    }
