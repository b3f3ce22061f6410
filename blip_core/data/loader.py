"""Training and evaluation data: shards -> (image tensor, caption tokens, image id) batches.

Training pipeline (webdataset stages): shard list -> split by node -> split by worker -> tar
expansion -> seeded shuffle -> decode (guarded) -> one item per caption -> seeded shuffle ->
transform -> batch. Every random choice (shuffle order, crop) derives from (seed, epoch, rank,
worker, sample key), so a run resumed mid-epoch sees exactly the batches it would have seen.

The image transforms (mild crops, no flip, no colour jitter) are in `blip_core.data.transforms`.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import webdataset as wds

from blip_core.config.data import REGION_GROUP, ReaderConfig
from blip_core.data.labelled import LabelCollate, label_items
from blip_core.data.reader import ReadStats, SampleDecoder, drop_duplicate_keys, track_shard
from blip_core.data.sample_cache import SampleCache
from blip_core.data.shards import list_shards, read_manifests
from blip_core.data.transforms import TrainTransform, eval_transform
from blip_core.distributed import world_info


def image_id_int(image_id: str) -> int:
    """A stable 63-bit integer for an image id string (same image -> same int, across processes)."""
    return int.from_bytes(hashlib.blake2b(image_id.encode(), digest_size=8).digest(), "big") & ((1 << 63) - 1)


def _expand_captions(src: Iterator[dict[str, Any]], per_image: int = 0, seed: str = "") -> Iterator[dict[str, Any]]:
    """One training pair per caption; all pairs of an image share its id (same-image aware losses).
    `per_image` n > 0: n of an image's captions this epoch, drawn from (seed, key) (BLIP-2 samples one
    of its top-two captions per image at each step)."""
    for s in src:
        chosen = list(enumerate(s["captions"]))
        if 0 < per_image < len(chosen):
            chosen = sorted(random.Random(f"{seed}/{s['key']}/captions").sample(chosen, per_image))
        for i, caption in chosen:
            yield {
                "key": s["key"],
                "pair": f"{s['key']}/{i}",
                "image": s["image"],
                "caption": caption,
                "image_id": str(s["meta"].get("image_id", s["key"])),
            }


def _seeded_shuffle(src, bufsize: int, seed: str) -> Iterator[Any]:
    """webdataset's shuffle with an RNG seeded per (seed, rank, worker)."""
    info = torch.utils.data.get_worker_info()
    rng = random.Random(f"{seed}/{world_info()[0]}/{info.id if info else 0}")
    yield from wds.filters._shuffle(src, bufsize, min(bufsize, 100), rng)


def _split_samples(src, consumers: int, index_fn):
    """Item-level split for when there are fewer shards than (ranks x workers): consumer c keeps
    items c, c + consumers, ... so no pair is trained on by two consumers."""
    me = index_fn()
    for i, s in enumerate(src):
        if i % consumers == me:
            yield s


def _consumer_index(num_workers: int) -> int:
    info = torch.utils.data.get_worker_info()
    return world_info()[0] * max(1, num_workers) + (info.id if info else 0)


def _apply_transform(src, transform: TrainTransform):
    for item in src:
        image = item.pop("image")
        if item.get("regions"):  # per-object boxes move with the crop
            boxes = transform.crop_boxes([r["box"] for r in item["regions"]], *image.size, item["pair"])
            item["regions"] = [{**r, "box": b} for r, b in zip(item["regions"], boxes, strict=True)]
        item["tensor"] = transform(image, item["pair"])
        yield item


def _tar_samples(stats: ReadStats) -> list[Any]:
    """Shard urls -> raw samples, each shard tracked and each skip counted in `stats`."""
    return [functools.partial(track_shard, stats=stats), wds.tarfile_to_samples(handler=stats.handler),
            functools.partial(drop_duplicate_keys, stats=stats)]  # fmt: skip


def _statement_items(src: Iterator[dict[str, Any]], kind: str, seed: str, stats: ReadStats) -> Iterator[dict[str, Any]]:
    """One captioned item per labelled image: a count statement written from its region labels
    (`blip_core.data.region_text`), drawn from (seed, key); an image it cannot describe is a counted skip."""
    from blip_core.data.region_text import count_statement

    for s in src:
        statement = count_statement(s["labels"].get(REGION_GROUP) or [], kind, random.Random(f"{seed}/{s['key']}"))
        if statement is None:
            detail = f"{s['key']}: no regions, or a group past four"
            stats.record_skip(stats.current_shard, "no_count_statement", detail)
            continue
        yield {"key": s["key"], "pair": f"{s['key']}/statement", "image": s["image"], "caption": statement,
               "image_id": str(s["meta"].get("image_id", s["key"]))}  # fmt: skip


def _mix_in(src, others: Callable[[], Iterator[dict[str, Any]]], every: int, k: int) -> Iterator[dict[str, Any]]:
    """After each `every` items of `src`, `k` items of the (endless) stream `others()` builds."""
    extra = others()
    for i, item in enumerate(src, 1):
        yield item
        if i % every == 0:
            yield from itertools.islice(extra, k)


def _add_itm_extras(src, transform: TrainTransform, *, swaps: bool, phrases: bool):
    """Extra ITM rows per pair (`blip_core.data.caption_edits`): its caption with one attribute
    swapped (label 0); one noun phrase of it (label 1) and, with swaps, that phrase swapped (label 0).
    Each row carries the indices of its false words (none for a positive). Drawn from (seed, epoch,
    pair) like the crop, so a resumed run sees the same rows."""
    from blip_core.data.caption_edits import phrase_positive, swap_negative_marked

    for item in src:
        rng = random.Random(f"{transform.seed}/{transform.epoch}/{item['pair']}/itm")
        extra: list[tuple[str, int, set[int]]] = []
        if swaps and (neg := swap_negative_marked(item["caption"], rng)) is not None:
            extra.append((neg[0], 0, neg[1]))
        if phrases and (part := phrase_positive(item["caption"], rng)) is not None:
            extra.append((part, 1, set()))
            if swaps and (neg := swap_negative_marked(part, rng)) is not None:
                extra.append((neg[0], 0, neg[1]))
        item["itm_extra"] = extra
        yield item


def _add_lm_negatives(src, transform: TrainTransform):
    """A swap negative of each caption (`blip_core.data.caption_edits`) for the captioner's
    unlikelihood term (TrainConfig.lm_unlikelihood), drawn from (seed, epoch, pair) like the crop."""
    from blip_core.data.caption_edits import swap_negative

    for item in src:
        rng = random.Random(f"{transform.seed}/{transform.epoch}/{item['pair']}/lm")
        item["lm_negative"] = swap_negative(item["caption"], rng) or item["caption"]  # itself: no term
        yield item


@dataclass
class Collate:
    """Stack images, tokenize captions (with the captioner prompt for the caption task)."""

    processor: Any
    prompt: bool = False
    word_labels: bool = False
    """Label the ITM rows' words (TrainConfig.itm_word_loss): true, false (a swap's) or none."""

    def __post_init__(self) -> None:
        if self.word_labels and self.prompt:
            raise ValueError("word labels are for ITM batches, which have no captioner prompt")

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        captions = [it["caption"] for it in items]
        if self.word_labels:  # an ITM task (no prompt): the same ids, and each token's word labelled true
            ids, mask, positive_words = self.processor.with_word_labels(captions, [set()] * len(captions))
        else:
            ids, mask = self.processor(captions, prompt=self.prompt)
        batch = {
            "images": torch.stack([it["tensor"] for it in items]),
            "input_ids": ids,
            "attention_mask": mask,
            "image_ids": torch.tensor([image_id_int(it["image_id"]) for it in items], dtype=torch.long),
            "keys": [it["pair"] for it in items],
        }
        if "lm_negative" in items[0]:  # swap negatives, tokenized as the captions are
            batch["negative_ids"] = self.processor([it["lm_negative"] for it in items], prompt=self.prompt)[0]
        rows = [(i, *row) for i, it in enumerate(items) for row in it.get("itm_extra", ())]
        if rows:  # extra ITM rows made from the captions (swap negatives, partial positives)
            texts = [r[1] for r in rows]
            extra = {"image_index": torch.tensor([r[0] for r in rows], dtype=torch.long),
                     "labels": torch.tensor([r[2] for r in rows], dtype=torch.long)}  # fmt: skip
            if self.word_labels:  # per token: 1 true word, 0 the swap's false word(s), -100 none
                ids, mask, extra["word_labels"] = self.processor.with_word_labels(texts, [r[3] for r in rows])
                extra["positive_word_labels"] = positive_words
            else:
                ids, mask = self.processor(texts)
            batch["itm_extra"] = {"input_ids": ids, "attention_mask": mask, **extra}
        return batch


def count_pairs(dirs: list[str | Path], *, labelled: bool = False, per_image: int = 0) -> int:
    """Image-caption pairs (or labelled images) in shard folders, from their manifests (no tar reads);
    with `per_image` n > 0, at most n pairs per image."""
    if labelled:
        return int(sum(len(read_manifests(d)) for d in dirs))
    counts = [read_manifests(d)["num_captions"] for d in dirs]
    return int(sum((c.clip(upper=per_image) if per_image else c).sum() for c in counts))


class TrainData:
    """Epochs of training batches over one or more shard folders.

    Each rank gets whole shards (split by node, then by worker) and the stream repeats, so every
    rank yields exactly `steps_per_epoch` batches of `batch_size` (drop-last semantics over the
    global batch); `batches(epoch, skip)` restarts an epoch part-way for resume.

    Image-caption pairs by default; with `classes` ({group: [class, ...]}), label-only images
    (object recognition) batched with multi-hot `labels` instead of tokenized captions. With
    `statement_dirs` (label-only folders) and `statements_per_batch` k, each batch of captions gets k
    count statements written from those images' region labels (`blip_core.data.region_text`).
    """

    def __init__(
        self,
        dirs: list[str | Path],
        processor,
        *,
        batch_size: int,
        image_size: int,
        seed: int,
        crop_scale_min: float | None,
        shuffle_buffer: int,
        num_workers: int,
        prompt: bool = False,
        reader_cfg: ReaderConfig | None = None,
        classes: dict[str, list[str]] | None = None,
        swap_negatives: bool = False,
        phrase_positives: bool = False,
        lm_negatives: bool = False,
        word_labels: bool = False,
        cache_bytes: int = 0,
        captions_per_image: int = 0,
        statement_dirs: list[str | Path] = (),
        statements_per_batch: int = 0,
        statement_kind: str = "scene",
    ) -> None:
        if not dirs:
            raise ValueError("training needs at least one data directory")
        if bool(statement_dirs) != (statements_per_batch > 0) or (statement_dirs and classes is not None):
            raise ValueError("count statements need label-only folders and statements_per_batch > 0, for image-text "
                             f"pairs (got {len(statement_dirs)} folders, {statements_per_batch} a batch)")  # fmt: skip
        self.statement_urls = [str(p) for d in statement_dirs for p in list_shards(d)]
        self.statements_per_batch, self.statement_kind = statements_per_batch, statement_kind
        self.statement_stats = ReadStats()
        self.urls = [str(p) for d in dirs for p in list_shards(d)]
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.shuffle_buffer = shuffle_buffer
        self.labelled = classes is not None
        self.swap_negatives, self.phrase_positives = swap_negatives, phrase_positives
        self.lm_negatives = lm_negatives
        self.captions_per_image = captions_per_image
        self.num_pairs = count_pairs(dirs, labelled=self.labelled, per_image=captions_per_image)
        world = world_info()[1]
        self.steps_per_epoch = self.num_pairs // (batch_size * world)
        if self.steps_per_epoch < 1:
            raise ValueError(f"{self.num_pairs} training pairs are fewer than one global batch ({batch_size * world})")
        self.transform = TrainTransform(image_size, crop_scale_min, seed)
        self.collate = LabelCollate(classes) if classes is not None else Collate(processor, prompt, word_labels)
        self.stats = ReadStats()
        self.reader_cfg = reader_cfg
        # later epochs replay the first one's reading (a worker's or another rank's cache dies with it)
        self.cache = SampleCache(cache_bytes) if cache_bytes and num_workers == 0 and world == 1 else None

    def _pipeline(self, epoch: int) -> wds.DataPipeline:
        self.transform.epoch = epoch
        stats = self.stats
        consumers = world_info()[1] * max(1, self.num_workers)
        shard_split = len(self.urls) >= consumers
        if self.cache is not None and self.cache.raw is not None:
            stages: list[Any] = [functools.partial(iter, self.cache.raw)]  # an earlier pass's tar members
        else:
            stages = [wds.SimpleShardList(self.urls)]
            if shard_split:
                stages += [wds.split_by_node, wds.split_by_worker]
            stages += _tar_samples(stats)
            if self.cache is not None:
                stages.append(functools.partial(self.cache.record_raw, stats=stats))
        if self.shuffle_buffer:
            stages.append(
                functools.partial(_seeded_shuffle, bufsize=self.shuffle_buffer, seed=f"{self.seed}/{epoch}/raw")
            )
        decoder = SampleDecoder(stats, self.reader_cfg, labelled=self.labelled)
        stages += [
            wds.map(decoder if self.cache is None else self.cache.decoder(decoder)),
            label_items
            if self.labelled
            else functools.partial(_expand_captions, per_image=self.captions_per_image, seed=f"{self.seed}/{epoch}"),
        ]
        if not shard_split and consumers > 1:
            # few shards: split the pair stream, so N ranks see exactly the pairs one process would
            index_fn = functools.partial(_consumer_index, self.num_workers)
            stages.append(functools.partial(_split_samples, consumers=consumers, index_fn=index_fn))
        if self.shuffle_buffer:
            stages.append(
                functools.partial(_seeded_shuffle, bufsize=4 * self.batch_size, seed=f"{self.seed}/{epoch}/pairs")
            )
        stages.append(functools.partial(_apply_transform, transform=self.transform))
        if self.statements_per_batch:  # before the per-item edits, so the statements get them too
            others = functools.partial(self._statements, epoch)
            stages.append(functools.partial(_mix_in, others=others, every=self.batch_size, k=self.statements_per_batch))
        if self.swap_negatives or self.phrase_positives:
            stages.append(functools.partial(_add_itm_extras, transform=self.transform, swaps=self.swap_negatives,
                                            phrases=self.phrase_positives))  # fmt: skip
        if self.lm_negatives:
            stages.append(functools.partial(_add_lm_negatives, transform=self.transform))
        size = self.batch_size + self.statements_per_batch
        stages.append(wds.batched(size, collation_fn=self.collate, partial=False))
        return wds.DataPipeline(*stages).repeat()

    def _statements(self, epoch: int) -> Iterator[dict[str, Any]]:
        """The endless stream of count-statement items of this epoch, for this consumer (item-level
        split: the label-only folder is read whole by each, every consumer keeps its own share)."""
        stats = self.statement_stats
        consumers = world_info()[1] * max(1, self.num_workers)
        urls = list(self.statement_urls)  # a fresh shard order each epoch: the epochs read different images first
        random.Random(f"{self.seed}/{epoch}/statement-shards").shuffle(urls)
        stages: list[Any] = [wds.SimpleShardList(urls), *_tar_samples(stats)]
        if consumers > 1:
            stages.append(functools.partial(_split_samples, consumers=consumers,
                                            index_fn=functools.partial(_consumer_index, self.num_workers)))  # fmt: skip
        stages += [
            functools.partial(
                _seeded_shuffle, bufsize=max(self.shuffle_buffer, 1), seed=f"{self.seed}/{epoch}/statements"
            ),  # fmt: skip
            wds.map(SampleDecoder(stats, self.reader_cfg, labelled=True)),
            functools.partial(_statement_items, kind=self.statement_kind, seed=f"{self.seed}/{epoch}", stats=stats),
            functools.partial(_apply_transform, transform=self.transform),
        ]
        return iter(wds.DataPipeline(*stages).repeat())

    def batches(self, epoch: int, skip: int = 0) -> Iterator[dict[str, Any]]:
        """The batches of `epoch`, starting after the first `skip` (for resume)."""
        pipe = self._pipeline(epoch)
        if self.num_workers:
            loader = torch.utils.data.DataLoader(pipe, batch_size=None, num_workers=self.num_workers,
                                                 persistent_workers=False, worker_init_fn=forked_worker_init,
                                                 pin_memory=torch.cuda.is_available())  # fmt: skip
        else:
            loader = pipe
        return itertools.islice(iter(loader), skip, self.steps_per_epoch)


def forked_worker_init(worker_id: int) -> None:
    """A forked loader worker drops the threading exit hooks it inherited from its parent.

    They belong to the parent's threads, which a fork does not copy, and run at the worker's exit
    they can fail it: after a Prefect flow run in the process, Prefect's services left such a hook,
    and every DataLoader worker that reached the end of a finite stream exited with code 1
    ("Details are lost due to multiprocessing"). The training stream repeats, so training stops its
    workers before they exit on their own; the hook-free exit matters for finite streams.
    """
    import threading

    hooks = getattr(threading, "_threading_atexits", None)  # CPython's list behind _register_atexit
    if isinstance(hooks, list):
        hooks.clear()


@dataclass
class EvalSplit:
    """A whole evaluation split in memory: images, their captions, ground-truth scenes if any."""

    keys: list[str]
    images: torch.Tensor  # (N, 3, S, S)
    captions: list[list[str]]
    scenes: list[dict | None]


def load_eval_split(folder: str | Path, image_size: int, *, max_images: int = 0) -> EvalSplit:
    from blip_core.data.reader import iter_samples

    keys, images, captions, scenes = [], [], [], []
    for s in iter_samples(folder):
        keys.append(s["key"])
        images.append(eval_transform(s["image"], image_size))
        captions.append(s["captions"])
        scenes.append(s["meta"].get("gt", {}).get("scene"))
        if max_images and len(keys) >= max_images:
            break
    if not keys:
        raise ValueError(f"no readable samples in {folder}")
    return EvalSplit(keys, torch.stack(images), captions, scenes)
