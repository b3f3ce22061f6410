"""What every importer shares: the import report, the size-guarded json loader, sample keys and the
name of the rejected-records file.

An importer counts every record it reads in an `ImportReport` and lists each one it does not
import, with its reason, in `<out>/_rejected.jsonl` (`REJECTED_FILE`); the report's summary goes
in `_stats.json` ("import"). Annotation files over `max_json_bytes` are refused before parsing.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REJECTED_FILE = "_rejected.jsonl"


@dataclass
class ImportReport:
    """What an import did: counts, and every rejected record with its reason."""

    source: str
    num_records: int = 0
    num_written: int = 0
    num_captions: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    def reject(self, record: Any, reason: str, detail: str = "", *, level: str = "record") -> None:
        """`level`: "record" (an image or sample not imported), "annotation" (one caption row of an
        image that may still be imported), "member" (a tar member that is no sample, e.g. a link)
        or "shard" (a broken tar; its lost samples are records, `lost_after_cut`)."""
        self.rejected.append({"record": _short(record), "reason": reason, "detail": detail[:300], "level": level})

    def rejected_by_reason(self, level: str = "record") -> dict[str, int]:
        """Rejected records per reason (an entry standing for several, e.g. a shard's count, adds its count)."""
        counts: Counter[str] = Counter()
        for r in self.rejected:
            if r.get("level", "record") != level:
                continue
            record = r["record"]
            counts[r["reason"]] += int(record.get("count", 1)) if isinstance(record, dict) else 1
        return dict(sorted(counts.items()))

    @property
    def num_rejected(self) -> int:
        return sum(self.rejected_by_reason().values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "num_records": self.num_records,
            "num_written": self.num_written,
            "num_captions": self.num_captions,
            "num_rejected": self.num_rejected,
            "rejected_by_reason": self.rejected_by_reason(),
            # counted apart from records: caption rows of kept images, tar members that are no
            # sample (links), broken tars (one count per shard)
            "also_rejected": {lv: r for lv in ("annotation", "member", "shard") if (r := self.rejected_by_reason(lv))},
            "outputs": self.outputs,
        }


def _short(record: Any, limit: int = 500) -> Any:
    """A rejected record as logged: whole when small, else a truncated repr (a hostile file may hold
    megabyte-long values)."""
    text = json.dumps(record, default=repr, ensure_ascii=False)
    return record if len(text) <= limit else {"truncated": text[:limit]}


_KEY_BAD = re.compile(r"[^A-Za-z0-9_-]+")


def make_key(prefix: str, ident: Any) -> str:
    """A webdataset-safe key (no dots or slashes)."""
    return f"{prefix}-{_KEY_BAD.sub('_', str(ident))}"


MAX_JSON_BYTES = 512 * 2**20
"""Annotation files larger than this are refused before parsing (COCO's captions_train2017.json is
~90 MB; BLIP's largest annotation file, ~1 GB of CC+SBU+LAION rows, needs the limit raised)."""


def load_json(path: Path, max_bytes: int = MAX_JSON_BYTES) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(
            f"{path} is {size / 2**20:,.0f} MiB, over the {max_bytes / 2**20:,.0f} MiB limit for an annotation "
            "file; refused before parsing (raise it with --max-json-mb if the file is trusted)"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid UTF-8 JSON: {e}") from None
