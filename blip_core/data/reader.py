"""Reading shards back with webdataset, robust to bad input.

The pipeline is built from webdataset's named stages (shard list -> split by node -> split by worker
-> tar expansion -> shuffle -> decode -> batch). Every sample that cannot be used is skipped with a
counted, logged reason in `ReadStats` (per shard); nothing aborts an epoch and nothing is dropped
silently. Reasons:

- `empty_shard`, `truncated_tar`, `unreadable_tar`: the tar itself is broken (one count per
  shard, `TAR_LEVEL_REASONS`); samples before the break are still read; a tar cut at a member
  boundary is recognised by its missing end-of-archive marker;
- `duplicate_file`: a tar member repeats within a sample; `duplicate_key`: a key seen before in the
  same shard (the first occurrence is kept);
- `link_member`: a symlink, hard link or device member (never followed; one count per member);
  `unnamed_member`: a file member without a `key.ext` name;
  `unsafe_key`: a member name that is absolute, climbs (`..`) or nests folders (`a/b.jpg`), which
  no output path may be built from;
- `missing_image`, `missing_caption`, `missing_json`: a sample lacks a member; `label_only`: a
  label-only (object-recognition) sample read as an image-text pair; read with `labelled=True`,
  a sample without labels is `missing_labels` or `bad_labels`;
- `bad_json`, `bad_caption_encoding`, `empty_caption`, `caption_too_long` (captions are NFC-
  normalised and stripped of control and invisible format characters, e.g. zero-width spaces and
  bidi overrides, first: a caption of only those is empty);
- `corrupt_image`, `image_too_large` (decompression-bomb guard, checked before decoding),
  `image_too_small`.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import random
import re
import tarfile
import threading
import unicodedata
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import webdataset as wds
from PIL import Image
from webdataset.tariterators import base_plus_ext

from blip_core.config.data import REGION_GROUP, RELATION_GROUP, ReaderConfig
from blip_core.data.shards import list_shards

logger = logging.getLogger(__name__)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


@dataclass
class ReadStats:
    """Counts of read and skipped samples, per shard and reason. Thread-safe."""

    ok: Counter[str] = field(default_factory=Counter)
    skipped: Counter[tuple[str, str]] = field(default_factory=Counter)
    examples: dict[tuple[str, str], str] = field(default_factory=dict)
    current_shard: str = "?"
    _truncated_in_pass: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record_ok(self, shard: str) -> None:
        with self._lock:
            self.ok[shard] += 1

    def record_skip(self, shard: str, reason: str, detail: str = "") -> None:
        with self._lock:
            self.skipped[(shard, reason)] += 1
            self.examples.setdefault((shard, reason), detail[:300])
        logger.warning("skipped sample in %s: %s %s", shard, reason, detail[:200])

    @property
    def num_ok(self) -> int:
        return sum(self.ok.values())

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def by_reason(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (_, reason), n in self.skipped.items():
            out[reason] += n
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        shards = sorted(set(self.ok) | {s for s, _ in self.skipped})
        return {
            "num_ok": self.num_ok,
            "num_skipped": self.num_skipped,
            "skipped_by_reason": self.by_reason(),
            "shards": {
                s: {
                    "ok": self.ok.get(s, 0),
                    "skipped": {r: n for (s2, r), n in sorted(self.skipped.items()) if s2 == s},
                }
                for s in shards
            },
        }

    # -- webdataset exception handler ------------------------------------------------------------
    def handler(self, exn: Exception) -> bool:
        """webdataset handler: classify, count, log, and continue (never abort the epoch)."""
        msg = str(exn.args[0]) if exn.args else str(exn)
        shard = self.current_shard
        if isinstance(exn, ValueError) and "duplicate file name" in msg:
            reason = "duplicate_file"
        elif isinstance(exn, tarfile.ReadError) and msg.startswith("empty file"):
            reason = "empty_shard"
        elif isinstance(exn, tarfile.ReadError | EOFError) or "unexpected end of data" in msg:
            reason = "truncated_tar"
        elif isinstance(exn, tarfile.TarError | OSError):
            reason = "unreadable_tar"
        else:
            reason = f"error_{type(exn).__name__}"
        if reason == "truncated_tar":
            # tarfile raises once while reading the member and again when asked for the next header
            if self._truncated_in_pass:
                return True
            self._truncated_in_pass = True
        self.record_skip(shard, reason, msg)
        return True


TAR_LEVEL_REASONS = frozenset({"empty_shard", "truncated_tar", "unreadable_tar"})
"""Reasons counted once per shard, not per sample."""
MEMBER_LEVEL_REASONS = frozenset({"link_member", "unnamed_member"})
"""Reasons counted per tar member that belongs to no sample (a sample left without its image by a
link member is counted too, as `missing_image`)."""


def track_shard(src: Iterable[dict[str, Any]], stats: ReadStats) -> Iterator[dict[str, Any]]:
    """Pipeline stage that remembers which shard is being expanded, for the exception handler, and
    counts a local tar that lacks its end-of-archive marker as `truncated_tar`: cut at a member
    boundary, it reads without an error and the samples after the cut would vanish unnoticed."""
    for source in src:
        url = str(source.get("url", "?"))
        stats.current_shard = Path(url).name
        stats._truncated_in_pass = False
        if tar_was_cut(url):
            stats.record_skip(stats.current_shard, "truncated_tar", "no end-of-archive marker: the file was cut")
            stats._truncated_in_pass = True  # the same cut may also raise while reading: count it once
        for name, reason, detail in unusable_members(url):  # webdataset passes over them without a word
            stats.record_skip(stats.current_shard, reason, f"{name}: {detail}")
        yield source


_LINK_KINDS = {tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hard link", tarfile.CHRTYPE: "character device",
               tarfile.BLKTYPE: "block device", tarfile.FIFOTYPE: "fifo"}  # fmt: skip


def unusable_members(path: str | Path) -> list[tuple[str, str, str]]:
    """(name, reason, detail) of the members of a local tar that webdataset skips silently: links and
    devices (`link_member`, never followed) and files whose name has no `key.ext` form
    (`unnamed_member`). Reads headers only (it seeks over the data)."""
    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        return []
    found = []
    try:
        with tarfile.open(p, "r:") as tf:
            for info in tf:
                if info.type in _LINK_KINDS:
                    found.append((info.name, "link_member", f"{_LINK_KINDS[info.type]}, not followed"))
                elif info.isreg() and not info.name.startswith("__") and base_plus_ext(info.name)[0] is None:
                    found.append((info.name, "unnamed_member", "no key.extension name"))
    except (tarfile.TarError, OSError, EOFError):
        pass  # a broken tar: reading it reports why
    return found


def tar_was_cut(path: str | Path) -> bool:
    """A local, non-empty tar file that does not end in tar's end-of-archive marker (two zero
    512-byte blocks, after the last member's padding): the file was cut short."""
    p = Path(path)
    try:
        size = p.stat().st_size if p.is_file() else 0
        if size == 0:
            return False  # not local, or empty (`empty_shard`)
        if size % 512 or size < 1024:
            return True
        with p.open("rb") as f:
            f.seek(size - 1024)
            return f.read(1024) != bytes(1024)
    except OSError:
        return False  # unreadable: reading it reports why


def drop_duplicate_keys(src: Iterable[dict[str, Any]], stats: ReadStats) -> Iterator[dict[str, Any]]:
    """Skip a sample whose key was already seen in the same pass over its shard (first one wins)."""
    url, seen = None, set()
    for sample in src:
        if sample.get("__url__") != url:
            url, seen = sample.get("__url__"), set()
        key = sample.get("__key__")
        if not isinstance(key, str) or not _SAFE_KEY.match(key):
            stats.record_skip(_shard_of(sample), "unsafe_key", f"{key!r}: absolute, climbing or nested member name")
            continue
        if key in seen:
            stats.record_skip(_shard_of(sample), "duplicate_key", str(key))
            continue
        seen.add(key)
        yield sample


_SAFE_KEY = re.compile(r"^[^/\\.][^/\\]*$")
"""A key names a sample inside its shard only: no folders, no leading dot (so no `..`, no `/abs`)."""


def _shard_of(sample: dict[str, Any]) -> str:
    return Path(str(sample.get("__url__", "?"))).name


class SampleDecoder:
    """Turns a raw webdataset sample into `{key, image, captions, meta}` or skips it with a reason.

    The decoded `image` is a PIL RGB image (decoded fully, so truncation surfaces here, not later in
    a transform). `meta` is the sample json minus `captions`; it may include `gt`, which only
    evaluation code may read.
    """

    def __init__(
        self, stats: ReadStats, cfg: ReaderConfig | None = None, *, keep_bytes: bool = False, labelled: bool = False
    ) -> None:
        self.stats = stats
        self.cfg = cfg or ReaderConfig()
        self.keep_bytes = keep_bytes
        self.labelled = labelled
        """Label-only samples (object recognition): class labels from the json's `labels`
        ({group: [class, ...]}) instead of captions; `missing_labels` / `bad_labels` otherwise."""

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any] | None:
        return self.counted(sample, self.decode_or_skip(sample))

    def decode_or_skip(self, sample: dict[str, Any]) -> dict[str, Any] | SkipSample:
        """The decoded sample, or why it is skipped (not yet counted)."""
        try:
            return self._decode(sample, _shard_of(sample), sample.get("__key__", "?"))
        except SkipSample as s:
            return s

    def counted(self, sample: dict[str, Any], result: dict[str, Any] | SkipSample) -> dict[str, Any] | None:
        """Count `result` in the stats; None for a skip."""
        shard = _shard_of(sample)
        if isinstance(result, SkipSample):
            self.stats.record_skip(shard, result.reason, f"{sample.get('__key__', '?')}: {result.detail}")
            return None
        self.stats.record_ok(shard)
        return result

    def _decode(self, sample: dict[str, Any], shard: str, key: str) -> dict[str, Any]:
        image_bytes = next((sample[e] for e in IMAGE_EXTS if e in sample), None)
        if image_bytes is None:
            raise SkipSample("missing_image", f"members {sorted(k for k in sample if not k.startswith('__'))}")
        meta: dict[str, Any] = {}
        if "json" in sample:
            try:
                meta = json.loads(sample["json"].decode("utf-8"))
                if not isinstance(meta, dict):
                    raise ValueError("json is not an object")
            except (UnicodeDecodeError, ValueError) as e:
                raise SkipSample("bad_json", str(e)) from None
        if self.labelled:
            return self._labelled(key, meta, image_bytes)
        captions = meta.pop("captions", None)
        if not captions and meta.get("labels") and "txt" not in sample:
            raise SkipSample("label_only", "a label-only sample (class labels, no caption): read it with labelled=True")
        if captions is None and "txt" in sample:
            try:
                captions = [sample["txt"].decode("utf-8")]
            except UnicodeDecodeError as e:
                raise SkipSample("bad_caption_encoding", str(e)) from None
        if captions is None:
            raise SkipSample("missing_caption", "no .txt and no captions in .json")
        if "json" not in sample and "txt" in sample:
            raise SkipSample("missing_json", "no .json member")
        if isinstance(captions, str):
            captions = [captions]
        if not isinstance(captions, list):
            raise SkipSample("bad_json", f"captions must be a string or a list, got {type(captions).__name__}")
        captions = [clean_caption(c) for c in captions if isinstance(c, str)]
        captions = [c for c in captions if c]
        if not captions:
            raise SkipSample("empty_caption", "all captions empty")
        if any(len(c) > self.cfg.max_caption_chars for c in captions):
            raise SkipSample("caption_too_long", f"> {self.cfg.max_caption_chars} characters")
        image = decode_image(image_bytes, self.cfg)
        out = {"key": key, "image": image, "captions": captions, "meta": meta}
        if self.keep_bytes:
            out["image_bytes"] = image_bytes
        return out

    def _labelled(self, key: str, meta: dict[str, Any], image_bytes: bytes) -> dict[str, Any]:
        if "labels" not in meta:
            raise SkipSample("missing_labels", "no 'labels' in the json (a label-only sample needs them)")
        labels = meta.pop("labels")
        ok = isinstance(labels, dict) and all(
            isinstance(g, str) and isinstance(v, list) and all(_LABEL_CHECKS.get(g, _is_class)(c) for c in v)
            for g, v in labels.items()
        )
        if not ok:
            raise SkipSample(
                "bad_labels",
                "labels must map a group to a list of class names (region: boxes {'box': [x0, y0, x1, y1] in [0, 1], "
                f"attribute: value}}; relation: a list of relation names per box), got {str(labels)[:100]}",
            )
        meta.pop("captions", None)
        out = {"key": key, "image": decode_image(image_bytes, self.cfg), "captions": [],
               "labels": labels, "meta": meta}  # fmt: skip
        if self.keep_bytes:
            out["image_bytes"] = image_bytes
        return out


def _is_region(region: Any) -> bool:
    """A `region` label: a box inside the image (fractions x0 < x1, y0 < y1) and string attributes."""
    if not isinstance(region, dict) or not isinstance(box := region.get("box"), list) or len(box) != 4:
        return False
    if not all(isinstance(v, int | float) and 0.0 <= v <= 1.0 for v in box) or box[0] >= box[2] or box[1] >= box[3]:
        return False
    return all(isinstance(v, str) for k, v in region.items() if k != "box")


def _is_class(name: Any) -> bool:
    return isinstance(name, str)


def _is_relations(names: Any) -> bool:
    """A box's `relation` labels: a list of relation names."""
    return isinstance(names, list) and all(isinstance(n, str) for n in names)


_LABEL_CHECKS = {REGION_GROUP: _is_region, RELATION_GROUP: _is_relations}
"""What one entry of a label group must be: a class name, or for the per-object groups a box / a list."""


def clean_caption(text: str) -> str:
    """NFC-normalised, without control or invisible format characters (zero-width spaces, bidi
    overrides: Unicode categories Cc and Cf, except tab and newline, which become spaces), stripped."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(
        " " if ch in "\t\n\r" else ch for ch in text if ch in "\t\n\r" or unicodedata.category(ch) not in ("Cc", "Cf")
    )
    return text.strip()


class SkipSample(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def decode_image(data: bytes, cfg: ReaderConfig) -> Image.Image:
    """Decode image bytes to RGB with a decompression-bomb guard before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            width, height = im.size  # header only
            if width * height > cfg.max_image_pixels:
                raise SkipSample("image_too_large", f"{width}x{height} > {cfg.max_image_pixels} pixels")
            if min(width, height) < cfg.min_image_side:
                raise SkipSample("image_too_small", f"{width}x{height} < {cfg.min_image_side}")
            im.load()
            return im.convert("RGB")
    except SkipSample:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise SkipSample("image_too_large", str(e)) from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        raise SkipSample("corrupt_image", f"{type(e).__name__}: {e}") from None


def build_pipeline(
    shards: str | Path | list[str | Path],
    *,
    stats: ReadStats | None = None,
    reader_cfg: ReaderConfig | None = None,
    transform: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
    shuffle_buffer: int = 0,
    seed: int = 0,
    batch_size: int | None = None,
    collate: Callable[[list[Any]], Any] | None = None,
    split_by_node: bool = True,
    split_by_worker: bool = True,
    repeat: bool = False,
    keep_bytes: bool = False,
    labelled: bool = False,
) -> wds.DataPipeline:
    """A webdataset pipeline of decoded samples (or batches).

    Args:
        shards: a shard folder, or a list of `.tar` paths.
        stats: collects per-shard read and skip counts (created if omitted; `pipeline.stats`).
        transform: applied to each decoded sample (returning None drops it; the transform is
            responsible for counting why).
        shuffle_buffer: samples held in the shuffle buffer; 0 keeps shard order (evaluation).
        batch_size: when set, yields lists (or `collate(list)`) of this many samples.
        split_by_node / split_by_worker: give each DDP rank and each DataLoader worker its own
            shards, so no sample is read twice per epoch.
        keep_bytes: also return the raw image bytes (`image_bytes`), e.g. for hashing.
        labelled: label-only samples (class labels, no captions; see `SampleDecoder.labelled`).
    """
    urls = [str(p) for p in (list_shards(shards) if isinstance(shards, str | Path) else shards)]
    stats = stats if stats is not None else ReadStats()
    stages: list[Any] = [wds.SimpleShardList(urls)]
    if shuffle_buffer:
        stages.append(wds.detshuffle(bufsize=len(urls), initial=len(urls), seed=seed))
    if split_by_node:
        stages.append(wds.split_by_node)
    if split_by_worker:
        stages.append(wds.split_by_worker)
    stages.append(functools.partial(track_shard, stats=stats))
    stages.append(wds.tarfile_to_samples(handler=stats.handler))
    stages.append(functools.partial(drop_duplicate_keys, stats=stats))
    if shuffle_buffer:
        stages.append(wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 100), rng=random.Random(seed)))
    stages.append(wds.map(SampleDecoder(stats, reader_cfg, keep_bytes=keep_bytes, labelled=labelled)))
    if transform is not None:
        stages.append(wds.map(transform))
    if batch_size:
        stages.append(wds.batched(batch_size, collation_fn=collate or _as_list, partial=True))
    pipeline = wds.DataPipeline(*stages)
    if repeat:
        pipeline = pipeline.repeat()
    pipeline.stats = stats  # type: ignore[attr-defined]
    return pipeline


def _as_list(batch: list[Any]) -> list[Any]:
    return list(batch)


def iter_samples(
    shards: str | Path | list[str | Path],
    *,
    stats: ReadStats | None = None,
    reader_cfg: ReaderConfig | None = None,
    keep_bytes: bool = False,
    labelled: bool = False,
) -> Iterator[dict[str, Any]]:
    """Decoded samples of all shards in order, in this process (no node/worker split)."""
    yield from build_pipeline(shards, stats=stats, reader_cfg=reader_cfg, split_by_node=False, split_by_worker=False,
                              keep_bytes=keep_bytes, labelled=labelled)  # fmt: skip
