"""Stage functions: one per pipeline step.

Each is called by its `blip <stage>` subcommand (which DVC stages run) and by the Prefect task of
the same step, so the two DAGs cannot drift apart. Stage functions read their own `params.yaml`
section, take explicit input/output paths, import only `blip_core` (never Prefect) and return a
small JSON-able summary.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from blip_core.config import ReaderConfig, TokenizerConfig, WorldConfig, load_params_section

logger = logging.getLogger(__name__)

DEFAULT_PARAMS = Path("params.yaml")


def _section(params: str | Path | None, name: str, cls):
    """A params section as its dataclass; defaults when no params file is given or present."""
    if params is None:
        params = DEFAULT_PARAMS if DEFAULT_PARAMS.is_file() else None
    return load_params_section(params, name, cls) if params is not None else cls()


def stage_world(
    out_dir: str | Path, *, params: str | Path | None = None, seed: int | None = None, scale: float | None = None,
    num_workers: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Generate the embedded image-caption world into `out_dir/<split>/`."""
    from blip_core.data.world import generate_world

    cfg: WorldConfig = _section(params, "world", WorldConfig)
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
    from blip_core.model.tokenizer import BLIP_PROMPT, train_tokenizer

    cfg: TokenizerConfig = _section(params, "tokenizer", TokenizerConfig)
    stats = ReadStats()
    captions = [c for d in data_dirs for s in iter_samples(d, stats=stats) for c in s["captions"]]
    # the captioner's prompt must tokenize into whole words even if no caption contains it
    captions += [BLIP_PROMPT] * cfg.min_frequency
    tok = train_tokenizer(
        captions, out_dir, vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, max_words=cfg.max_words
    )
    summary = {"vocab_size": len(tok), "num_captions": len(captions), "read": stats.to_dict()}
    (Path(out_dir) / "tokenizer_stats.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def stage_inspect(data_dirs: list[str | Path], *, params: str | Path | None = None) -> dict[str, Any]:
    """Read every sample of the given shard folders with the guarded reader; report counts and skips."""
    from blip_core.data.reader import ReadStats, iter_samples

    reader_cfg: ReaderConfig = _section(params, "reader", ReaderConfig)
    out: dict[str, Any] = {}
    for d in data_dirs:
        stats = ReadStats()
        num_captions = sum(len(s["captions"]) for s in iter_samples(d, stats=stats, reader_cfg=reader_cfg))
        out[Path(d).name] = {
            "num_ok": stats.num_ok, "num_skipped": stats.num_skipped, "num_captions": num_captions,
            "skipped": stats.by_reason(),
        }  # fmt: skip
    return out
