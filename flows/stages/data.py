"""Data stages: the world, the tokenizer, the read-back inspection, checkpoint conversion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from blip_core.config.data import ReaderConfig, TokenizerConfig, WorldConfig
from blip_core.fileio import write_json
from flows.stages.params import section


def stage_world(
    out_dir: str | Path,
    *,
    params: str | Path | None = None,
    seed: int | None = None,
    scale: float | None = None,
    num_workers: int | None = None,
) -> dict[str, Any]:
    """Generate the embedded image-caption world into `out_dir/<split>/`."""
    from blip_core.data.world.generate import generate_world

    cfg: WorldConfig = section(params, "world", WorldConfig)
    if seed is not None:
        cfg.seed = seed
    if num_workers is not None:
        cfg.num_workers = num_workers
    if scale is not None:
        cfg = cfg.scaled(scale)
    return generate_world(cfg, out_dir)


def stage_tokenizer(
    data_dirs: list[str | Path], out_dir: str | Path, *, params: str | Path | None = None
) -> dict[str, Any]:
    """Train the WordPiece tokenizer on the captions of the given training shard folders."""
    from blip_core.data.reader import ReadStats, iter_samples
    from blip_core.models.common.tokenizer import BLIP_PROMPT, train_tokenizer

    cfg: TokenizerConfig = section(params, "tokenizer", TokenizerConfig)
    stats = ReadStats()
    captions = [c for d in data_dirs for s in iter_samples(d, stats=stats) for c in s["captions"]]
    # the captioner's prompt must tokenize into whole words even if no caption contains it
    captions += [BLIP_PROMPT] * cfg.min_frequency
    tok = train_tokenizer(
        captions, out_dir, vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, max_words=cfg.max_words
    )
    summary = {"vocab_size": len(tok), "num_captions": len(captions), "read": stats.to_dict()}
    write_json(Path(out_dir) / "tokenizer_stats.json", summary)
    return summary


def stage_inspect(
    data_dirs: list[str | Path], *, params: str | Path | None = None, out_file: str | Path | None = None
) -> dict[str, Any]:
    """Read every sample of the given shard folders with the guarded reader; report counts and skips
    (also as JSON in `out_file`)."""
    from blip_core.data.labelled import is_labelled
    from blip_core.data.reader import ReadStats, iter_samples

    reader_cfg: ReaderConfig = section(params, "reader", ReaderConfig)
    out: dict[str, Any] = {}
    for d in data_dirs:
        stats = ReadStats()
        samples = iter_samples(d, stats=stats, reader_cfg=reader_cfg, labelled=is_labelled(d))
        num_captions = sum(len(s["captions"]) for s in samples)
        out[Path(d).name] = {
            "num_ok": stats.num_ok,
            "num_skipped": stats.num_skipped,
            "num_captions": num_captions,
            "skipped": stats.by_reason(),
        }
    if out_file is not None:
        Path(out_file).parent.mkdir(parents=True, exist_ok=True)
        write_json(out_file, out)
    return out


def _is_blip2_dir(src: str | Path) -> bool:
    """A Hugging Face directory whose config names a BLIP-2 / InstructBLIP architecture."""
    from blip_core.models.blip2.convert_hf import ARCHITECTURES

    config = Path(src) / "config.json"
    if not config.is_file():
        return False
    return bool(set(json.loads(config.read_text()).get("architectures") or ()) & set(ARCHITECTURES))


def stage_convert(
    src: str | Path,
    out_dir: str | Path,
    *,
    src_format: str,
    dst_format: str = "ours",
    kind: str | None = None,
    preset: str = "base",
    tokenizer: str | Path | None = None,
) -> dict[str, Any]:
    """Convert checkpoints between our format, official salesforce/BLIP .pth files and HF directories.

    - `blip`: needs `kind` (pretrain | captioner | retrieval), the architecture `preset` and a local
      tokenizer directory (bert-base-uncased for official weights);
    - `hf`: a BlipForConditionalGeneration / BlipForImageTextRetrieval directory, or a BLIP-2
      Blip2ForImageTextRetrieval one (our `qformer`; its BERT tokenizer from `tokenizer` or the
      directory). BLIP-2's stage-2 models hold a language model our format does not store yet:
      load those in Python (`blip_core.models.blip2.convert_hf.load_hf`);
    - `ours`: one of our checkpoint directories (with `kind`, a pre-training checkpoint is split).
    """
    from blip_core.models import pretrained
    from blip_core.models.blip import convert_hf, convert_official
    from blip_core.models.blip.presets import get_preset, with_tokenizer
    from blip_core.models.blip2 import convert_hf as blip2_hf
    from blip_core.models.common.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer) if tokenizer else None
    if src_format == "blip":
        if kind is None:
            raise ValueError("converting an official BLIP checkpoint needs --kind (pretrain, captioner or retrieval)")
        if tok is None:
            raise ValueError("converting an official BLIP checkpoint needs --tokenizer (a local bert-base-uncased dir)")
        cfg = with_tokenizer(get_preset(preset), tok)
        model = convert_official.load_official(src, kind, cfg)
    elif src_format == "hf" and _is_blip2_dir(src):
        model = blip2_hf.load_hf(src)
        if type(model).__name__ != "Blip2QFormer":
            raise ValueError(f"{src}: a BLIP-2 model with a language model ({type(model).__name__}) has no "
                             "checkpoint format of ours yet; Blip2ForImageTextRetrieval converts")  # fmt: skip
        if tok is None and (Path(src) / "tokenizer.json").is_file():
            tok = load_tokenizer(src)
        if tok is None:
            raise ValueError("converting a BLIP-2 Q-Former needs --tokenizer (its BERT tokenizer directory)")
        model.cfg.tokenizer = str(tokenizer or src)
    elif src_format == "hf":
        model = convert_hf.load_hf(src, tokenizer_dir=str(tokenizer or ""))
    elif src_format == "ours":
        model = pretrained.load_pretrained(src, kind=kind)
    else:
        raise ValueError(f"unknown source format {src_format!r} (blip, hf or ours)")
    if tok is None and model.cfg.tokenizer:
        tok = load_tokenizer(model.cfg.tokenizer)
    if dst_format == "hf" and pretrained.kind_of(model) == "qformer":
        blip2_hf.export_hf(model, out_dir)
        if tok is not None:
            tok.save_pretrained(str(out_dir))
    elif dst_format == "hf":
        convert_hf.export_hf(model, out_dir, tokenizer=tok)
    elif dst_format == "ours":
        pretrained.save_pretrained(model, out_dir, tokenizer=tok)
    else:
        raise ValueError(f"unknown target format {dst_format!r} (ours or hf)")
    n = sum(p.numel() for p in model.parameters())
    return {"kind": pretrained.kind_of(model), "out": str(out_dir), "format": dst_format, "parameters": n}
