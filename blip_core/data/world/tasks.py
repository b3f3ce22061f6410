"""The downstream-task splits of the embedded world (VQA, NLVR2, text-video): the items of a split
and writing it; the items and their checkers live in `vqa`, `nlvr` and `video`.

The BLIP paper transfers the pre-trained model to VQA, NLVR2 and (zero-shot) video-language tasks;
the world builds small analogues of each from its own scenes, so that every answer is known:

- VQA (`vqa_train` on coco_train images only, `vqa_test`, `vqa_novel`): questions about colour,
  shape, count, relation, size, background and yes/no existence; each question has exactly one
  answer in its scene (a referent that is absent or ambiguous is never asked about);
- NLVR2 (`nlvr_train`, `nlvr_test`, `nlvr_novel`): a statement about a pair of images and its
  truth, labels ~50/50; a false statement talks about things in the pair (plausible, not random);
- video (`video_test`, `video_novel`): a clip of `video_frames` frames drawn from a start scene
  and one event (an object moves, appears, disappears or changes colour) with 2-3 captions;
  `video_novel` clips start from `novel` scenes, so each holds a held-out (colour, shape) combo.

Everything derives from (seed, split, index, purpose) through `render.rng_for`, like the image splits.

The checkers (`vqa_answer`, `nlvr_truth`, `video_caption_true`) parse the TEXT of an item with the
shared lexicon and compute the truth from the scene(s); they share no code with the generators
beyond the lexicon and `relation_holds`, so a generator bug shows up as a failed check.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from blip_core.config.data import WorldConfig
from blip_core.data.task_data import TaskItem, write_task_items
from blip_core.data.world.items import TASK_SPLITS
from blip_core.data.world.nlvr import nlvr_items
from blip_core.data.world.video import video_items
from blip_core.data.world.vqa import vqa_items

logger = logging.getLogger(__name__)


def task_items(cfg: WorldConfig, split: str) -> Iterator[TaskItem]:
    """The items of one task split (see `TASK_SPLITS`)."""
    task = TASK_SPLITS[split][0]
    return {"vqa": vqa_items, "nlvr": nlvr_items, "video": video_items}[task](cfg, split)


def write_task_split(cfg: WorldConfig, out_dir: str | Path, split: str) -> dict[str, Any]:
    """Write one task split to `out_dir/<split>/` (replacing it); returns its stats."""
    task, image_split = TASK_SPLITS[split]
    folder = Path(out_dir) / split
    if folder.exists():
        shutil.rmtree(folder)
    items = list(task_items(cfg, split))
    counts = Counter(it.fields["type" if task != "video" else "event"] for it in items)
    extra: dict[str, Any] = {"image_split": image_split, "type_counts": dict(sorted(counts.items()))}
    if task == "nlvr":
        extra["label_counts"] = {
            str(k).lower(): v for k, v in sorted(Counter(it.fields["label"] for it in items).items())
        }
    if task == "vqa":
        extra["answer_counts"] = dict(sorted(Counter(it.fields["answer"] for it in items if
                                                     it.fields["type"] == "yesno").items()))  # fmt: skip
    if not items:
        logger.warning("%s: no items (its image split %s is too small)", split, image_split)
        return {"split": split, "task": task, "items": 0, "num_shards": 0, "bytes": 0}
    stats = write_task_items(folder, items, task=task, split=split, shard_size=cfg.shard_size, extra_stats=extra)
    size = sum((folder / s).stat().st_size for s in stats["shards"])
    return {"split": split, "task": task, "items": stats["items"], "num_shards": len(stats["shards"]), "bytes": size}
