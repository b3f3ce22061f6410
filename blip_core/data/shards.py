"""Writing webdataset shards in the img2dataset layout.

A shard folder holds `{shard:05d}.tar` (members `key.jpg`, `key.txt`, `key.json`), one parquet
manifest per shard (`{shard:05d}.manifest.parquet`, schema `MANIFEST_SCHEMA`; the name does not
collide with img2dataset's own `{shard:05d}.parquet`) and a folder-level
`_stats.json`. `key.txt` is the first caption; `key.json["captions"]` holds all of them, so a
sample can carry several captions (human captions, or CapFilt's kept web + synthetic ones).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds

from blip_core.fileio import DiskFullError, atomic_path, no_space_error, temp_path, write_json

logger = logging.getLogger(__name__)

# Fixed tar member mtime so that the same samples always give byte-identical shards.
TAR_MTIME = 0.0

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("caption", pa.string(), nullable=False),
        pa.field("caption_len", pa.int32(), nullable=False),
        pa.field("num_captions", pa.int32(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
    ]
)
"""Per-sample manifest row. `source` is human | web | synthetic | mixed | labels (label-only, no
caption: `caption` is empty); `sha256` hashes the image bytes."""

STATS_FILE = "_stats.json"
MANIFEST_SUFFIX = ".manifest.parquet"


def manifest_path(folder: str | Path, shard: str) -> Path:
    return Path(folder) / f"{shard}{MANIFEST_SUFFIX}"


def shard_name(index: int) -> str:
    return f"{index:05d}"


def list_shards(folder: str | Path) -> list[Path]:
    """The `.tar` shards of a folder, sorted; a clear error if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"shard folder not found: {folder}")
    tars = sorted(folder.glob("*.tar"))
    if not tars:
        raise FileNotFoundError(f"no .tar shards in {folder}")
    return tars


def image_size_from_jpeg(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.size


@dataclass(slots=True)
class ShardSummary:
    shard: str
    num_samples: int
    num_captions: int
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "num_samples": self.num_samples,
            "num_captions": self.num_captions,
            "bytes": self.bytes,
        }


class ShardWriter:
    """Writes one shard (tar + parquet manifest). Use as a context manager.

    Writes go to temporary names and are renamed on close, so a crash never leaves a shard that
    looks complete.
    """

    def __init__(self, folder: str | Path, index: int, *, split: str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name = shard_name(index)
        self.split = split
        self._tar_tmp = temp_path(self.folder / f"{self.name}.tar")
        self._stream = open(self._tar_tmp, "wb")  # noqa: SIM115 (closed in close())
        self._tar = wds.TarWriter(self._stream, mtime=TAR_MTIME)
        self._rows: list[dict[str, Any]] = []
        self._keys: set[str] = set()

    def write(
        self,
        key: str,
        jpeg: bytes,
        captions: list[str],
        *,
        source: str,
        meta: dict[str, Any] | None = None,
        size: tuple[int, int] | None = None,
    ) -> None:
        """Add a sample. `meta` goes into key.json beside `captions` (e.g. image_id, gt).

        A label-only sample (an object-recognition image, ImageNet-style) has no captions and its
        class labels in `meta["labels"]`."""
        if not captions and not (meta or {}).get("labels"):
            raise ValueError(f"sample {key}: at least one caption (or class labels in meta['labels']) is required")
        if key in self._keys:
            raise ValueError(f"sample {key}: duplicate key in shard {self.name}")
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} must not contain '.' or '/'")
        self._keys.add(key)
        meta = dict(meta or {})
        image_id = str(meta.get("image_id", key))
        doc = {"key": key, "image_id": image_id, "source": source, "captions": captions, **meta}
        sample = {
            "__key__": key,
            "jpg": jpeg,
            "json": json.dumps(doc, sort_keys=True, ensure_ascii=False).encode("utf-8"),
        }
        if captions:
            sample["txt"] = captions[0].encode("utf-8")
        try:
            self._tar.write(sample)
        except OSError as e:
            self._fail(e)
        width, height = size if size is not None else image_size_from_jpeg(jpeg)
        self._rows.append(
            {
                "key": key,
                "shard": self.name,
                "width": width,
                "height": height,
                "caption": captions[0] if captions else "",
                "caption_len": len(captions[0].split()) if captions else 0,
                "num_captions": len(captions),
                "sha256": hashlib.sha256(jpeg).hexdigest(),
                "source": source,
                "split": self.split,
                "image_id": image_id,
            }
        )

    def close(self) -> ShardSummary:
        tar_path = self.folder / f"{self.name}.tar"
        try:
            self._tar.close()  # closes self._stream too
            os.replace(self._tar_tmp, tar_path)
            write_manifest(self._rows, manifest_path(self.folder, self.name))
        except OSError as e:  # a tar without its manifest is not a finished shard either
            tar_path.unlink(missing_ok=True)
            self._fail(e)
        return ShardSummary(
            shard=self.name,
            num_samples=len(self._rows),
            num_captions=sum(r["num_captions"] for r in self._rows),
            bytes=tar_path.stat().st_size,
        )

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def abort(self) -> None:
        """Close and delete the partial shard: nothing is left that could pass for a finished one."""
        with contextlib.suppress(OSError):  # closing flushes, which fails again on a full disk
            self._tar.close()
        self._tar_tmp.unlink(missing_ok=True)

    def _fail(self, e: OSError):
        self.abort()
        cause = no_space_error(e)
        if cause is not None and not isinstance(e, DiskFullError):
            raise DiskFullError(self.folder / f"{self.name}.tar", cause) from e
        raise e


def write_manifest(rows: list[dict[str, Any]], path: str | Path) -> None:
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_manifests(folder: str | Path):
    """All per-shard manifests of a folder as one pandas DataFrame."""
    import pandas as pd

    paths = sorted(Path(folder).glob(f"*{MANIFEST_SUFFIX}"))
    if not paths:
        raise FileNotFoundError(f"no parquet manifests in {folder}")
    return pd.concat([pq.read_table(p).to_pandas() for p in paths], ignore_index=True)


def write_stats(folder: str | Path, stats: dict[str, Any]) -> Path:
    return write_json(Path(folder) / STATS_FILE, stats)


def read_stats(folder: str | Path) -> dict[str, Any]:
    return json.loads((Path(folder) / STATS_FILE).read_text())
