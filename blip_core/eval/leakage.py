"""Evaluation images must not be in the pre-training pool: compare content hashes (sha256 of the
image bytes, from the shard manifests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from blip_core.data.shards import read_manifests


def leakage_report(
    eval_dirs: list[str | Path], pool_dirs: list[str | Path], *, max_examples: int = 20
) -> dict[str, Any]:
    pool: dict[str, str] = {}
    for d in pool_dirs:
        m = read_manifests(d)
        pool.update(zip(m["sha256"], m["key"], strict=True))
    report: dict[str, Any] = {"pool": [str(d) for d in pool_dirs], "pool_images": len(pool), "splits": {}}
    total = 0
    for d in eval_dirs:
        m = read_manifests(d)
        hits = m[m["sha256"].isin(pool)]
        total += len(hits)
        report["splits"][Path(d).name] = {
            "images": int(len(m)),
            "leaked": int(len(hits)),
            "examples": [{"eval_key": k, "pool_key": pool[h]} for k, h in zip(hits["key"], hits["sha256"])][
                :max_examples
            ],
        }
    report["leaked_total"] = total
    return report
