"""Downstream-task items (VQA, NLVR², video) as webdataset shards: one sample per item.

A sample is `key.0.jpg`, `key.1.jpg`, ... (its images: one for VQA, two for NLVR², the frames of
a video clip) and `key.json` (the item's fields, e.g. question / answers / type, statement / label,
captions; `scene` / `scenes` hold the world's ground truth, for checking and evaluation only).
The world writes these splits (`vqa_train`, `nlvr_test`, `video_test`, ...) and the importers of
public layouts (VQA v2, NLVR2) write the same format, so training and evaluation read one thing.
`_stats.json` says which task a folder holds.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import webdataset as wds

from blip_core.data.shards import STATS_FILE, TAR_MTIME, read_stats, write_stats
from blip_core.fileio import temp_path

logger = logging.getLogger(__name__)

SHARD_SIZE = 1000
IMAGE_SPLITS = ("pairs", "labels")
"""Not item tasks: what image-caption and label-only splits hold (blip_core.registry.IMAGE_DATA)."""


@dataclass
class TaskItem:
    """One item: its key, its images (JPEG bytes when written, PIL images when read) and fields."""

    key: str
    images: list[Any]
    fields: dict[str, Any] = field(default_factory=dict)


def write_task_items(
    folder: str | Path,
    items: Iterable[TaskItem],
    *,
    task: str,
    split: str,
    shard_size: int = SHARD_SIZE,
    extra_stats: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `items` as `folder/<task>-NNNNN.tar` shards (renamed in when complete) and `_stats.json`."""
    if not task.isidentifier() or task in IMAGE_SPLITS:
        raise ValueError(f"task items need a task name (e.g. vqa, nlvr, video), got {task!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{task}-*.tar"):  # a rewrite replaces the folder's items
        old.unlink()
    shards: list[str] = []
    n, keys, writer, stream, tmp = 0, set(), None, None, None

    def close() -> None:
        if writer is not None:
            writer.close()
            os.replace(tmp, folder / shards[-1])

    for item in items:
        if "." in item.key or "/" in item.key or not item.key:
            raise ValueError(f"item key {item.key!r} must be non-empty, without '.' or '/'")
        if item.key in keys:
            raise ValueError(f"duplicate item key {item.key!r} in {folder}")
        if not item.images:
            raise ValueError(f"item {item.key}: at least one image is required")
        keys.add(item.key)
        if n % shard_size == 0:
            close()
            shards.append(f"{task}-{len(shards):05d}.tar")
            tmp = temp_path(folder / shards[-1])
            stream = open(tmp, "wb")  # noqa: SIM115 (closed by the TarWriter)
            writer = wds.TarWriter(stream, mtime=TAR_MTIME)
        doc = {"key": item.key, "num_images": len(item.images), **item.fields}
        sample = {"__key__": item.key, "json": json.dumps(doc, sort_keys=True, ensure_ascii=False).encode("utf-8")}
        sample |= {f"{i}.jpg": jpeg for i, jpeg in enumerate(item.images)}
        writer.write(sample)
        n += 1
    close()
    stats = {"task": task, "split": split, "items": n, "shards": shards} | (extra_stats or {})
    write_stats(folder, stats)
    return stats


def task_of(folder: str | Path) -> str | None:
    """The task a folder's items are for (its `_stats.json`), or None for an image-caption split."""
    if not (Path(folder) / STATS_FILE).is_file():
        return None
    task = read_stats(folder).get("task")
    return task if isinstance(task, str) and task.isidentifier() and task not in IMAGE_SPLITS else None


def iter_task_items(folder: str | Path, *, decode: bool = True) -> Iterator[TaskItem]:
    """The items of a folder in shard order; images as RGB PIL images (`decode`) or JPEG bytes.
    An item whose JSON or an image does not decode is skipped, counted in the log with its reason."""
    from PIL import Image

    folder = Path(folder)
    tars = sorted(folder.glob("*.tar"))
    if not tars:
        raise FileNotFoundError(f"no task shards (*.tar) in {folder}")
    skipped: dict[str, int] = {}
    for tar in tars:
        for sample in wds.WebDataset(str(tar), shardshuffle=False, empty_check=False):
            key = sample.get("__key__", "?")
            try:
                doc = json.loads(sample["json"])
                count = int(doc.pop("num_images"))
                raw = [sample[f"{i}.jpg"] for i in range(count)]
                images = [Image.open(io.BytesIO(b)).convert("RGB") for b in raw] if decode else raw
            except (KeyError, ValueError, OSError) as e:
                reason = type(e).__name__
                skipped[reason] = skipped.get(reason, 0) + 1
                logger.warning("skipping task item %s in %s: %s: %s", key, tar.name, reason, e)
                continue
            doc.pop("key", None)
            yield TaskItem(key, images, doc)
    if skipped:
        logger.warning("%s: skipped %d unreadable items %s", folder, sum(skipped.values()), skipped)


def read_task_items(folder: str | Path, *, limit: int = 0) -> list[TaskItem]:
    out = []
    for item in iter_task_items(folder):
        out.append(item)
        if limit and len(out) >= limit:
            break
    if not out:
        raise ValueError(f"no readable task items in {folder}")
    return out


def load_eval_items(folder: str | Path, image_size: int, *, max_images: int = 0) -> list[TaskItem]:
    """A task split for evaluation (the registry's `load_eval`): its items, at most `max_images`
    (evaluate.max_images) of them; images stay PIL (each evaluator transforms them at its model's size)."""
    del image_size  # the same items serve every resolution
    return read_task_items(folder, limit=max_images)


def data_kind(folder: str | Path) -> str:
    """What a data folder holds (a `blip_core.registry.Task.data`): a task's items, label-only images or
    image-caption pairs."""
    from blip_core.data.labelled import is_labelled

    return task_of(folder) or ("labels" if is_labelled(folder) else "pairs")
