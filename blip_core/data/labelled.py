"""Label-only (object recognition) data: which folders are label-only, their class vocabulary, and
their training items and batches (multi-hot labels, per-object boxes and relations)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from blip_core.config.data import REGION_GROUP, RELATION_GROUP, region_attributes


def label_items(src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """One training item per labelled image (object recognition: no captions)."""
    for s in src:
        labels = dict(s["labels"])
        yield {"key": s["key"], "pair": s["key"], "image": s["image"], "labels": labels,
               "regions": labels.pop(REGION_GROUP, None), "relations": labels.pop(RELATION_GROUP, None)}  # fmt: skip


@dataclass
class LabelCollate:
    """Stack images; class labels -> one multi-hot row over every group's classes, in `classes` order.

    The `region` group (per-object boxes with `attribute:value` classes) becomes `regions`: boxes
    (B, R, 4) as fractions of the (cropped) image, padded with -1, and each box's class index per
    attribute (B, R, A), -1 where padded; R is the most objects of an image in the batch. The
    `relation` group (a list of relations per box) becomes `regions["relations"]`, (B, R, K) multi-hot."""

    classes: dict[str, list[str]]

    def __post_init__(self) -> None:
        image_level = {g: cs for g, cs in self.classes.items() if g not in (REGION_GROUP, RELATION_GROUP)}
        self.index = {(g, c): i for i, (g, c) in enumerate((g, c) for g, cs in image_level.items() for c in cs)}
        self.region_index = {
            attribute: {value: k for k, value in enumerate(values)}
            for attribute, values in region_attributes(self.classes.get(REGION_GROUP, [])).items()
        }
        self.relation_index = {name: k for k, name in enumerate(self.classes.get(RELATION_GROUP, []))}

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        labels = torch.zeros(len(items), len(self.index))
        for row, it in enumerate(items):
            for group, names in it["labels"].items():
                for name in names:
                    if (group, name) not in self.index:
                        raise ValueError(
                            f"sample {it['key']}: unknown class {group}={name!r} (classes: {self.classes})"
                        )
                    labels[row, self.index[(group, name)]] = 1.0
        batch = {"images": torch.stack([it["tensor"] for it in items]), "labels": labels,
                 "keys": [it["pair"] for it in items]}  # fmt: skip
        if self.region_index:
            batch["regions"] = self._regions(items)
        return batch

    def _regions(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        attributes = list(self.region_index)
        most = max(1, max(len(it.get("regions") or ()) for it in items))
        boxes = torch.full((len(items), most, 4), -1.0)
        classes = torch.full((len(items), most, len(attributes)), -1, dtype=torch.long)
        for row, it in enumerate(items):
            if it.get("regions") is None:
                raise ValueError(f"sample {it['key']}: no {REGION_GROUP!r} labels (classes: {self.classes})")
            for r, region in enumerate(it["regions"]):
                boxes[row, r] = torch.tensor(region["box"], dtype=torch.float32)
                for a, attribute in enumerate(attributes):
                    value = region.get(attribute)
                    if value not in self.region_index[attribute]:
                        raise ValueError(f"sample {it['key']}: unknown region {attribute} {value!r}")
                    classes[row, r, a] = self.region_index[attribute][value]
        out = {"boxes": boxes, "classes": classes}
        if self.relation_index:
            out["relations"] = self._relations(items, most)
        return out

    def _relations(self, items: list[dict[str, Any]], most: int) -> torch.Tensor:
        relations = torch.zeros(len(items), most, len(self.relation_index))
        for row, it in enumerate(items):
            per_box = it.get("relations")
            if per_box is None or len(per_box) != len(it["regions"]):
                raise ValueError(
                    f"sample {it['key']}: {RELATION_GROUP!r} labels must give one list per region box "
                    f"({len(it['regions'])} boxes), got {per_box!r}"
                )
            for r, names in enumerate(per_box):
                for name in names:
                    if name not in self.relation_index:
                        raise ValueError(f"sample {it['key']}: unknown relation {name!r}")
                    relations[row, r, self.relation_index[name]] = 1.0
        return relations


def is_labelled(folder: str | Path) -> bool:
    """A label-only (object recognition) shard folder: its `_stats.json` names its `classes`."""
    from blip_core.data.shards import STATS_FILE

    try:
        return bool(json.loads((Path(folder) / STATS_FILE).read_text()).get("classes"))
    except (OSError, ValueError):
        return False


def read_classes(dirs: list[str | Path]) -> dict[str, list[str]]:
    """The class vocabulary of label-only shard folders (`classes` in each folder's `_stats.json`)."""
    from blip_core.data.shards import read_stats

    found: dict[str, list[str]] | None = None
    for d in dirs:
        try:
            classes = read_stats(d).get("classes")
        except (OSError, ValueError):
            classes = None
        if not classes:
            raise ValueError(f"{d} is not a label-only split: its _stats.json names no 'classes'")
        if found is not None and classes != found:
            raise ValueError(f"label-only folders disagree on their classes: {d} has {classes}, another {found}")
        found = classes
    if found is None:
        raise ValueError("no label-only folder given")
    return found
