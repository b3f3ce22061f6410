"""One pass of a training stream's reading kept in memory for the epochs after it.

A small training set is read (tar members) and decoded (JPEG, json) once per epoch, the same bytes
each time; on 2 CPU cores that was a quarter of the vision start's time. `SampleCache` keeps the
raw samples of one whole pass and each sample's decoding within a byte budget
(`TrainConfig.cache_samples_mb`); `TrainData` replays them, so the later epochs are the epochs read
from disk, batch for batch and skip count for skip count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from blip_core.data.reader import ReadStats, SampleDecoder, SkipSample


class SampleCache:
    """One pass of a training stream's reading kept in memory for the passes after it, within a
    byte budget: the raw samples (tar members after the duplicate check), replayed in the same order
    once a whole pass was read without a tar-level skip, and each sample's decoding (the image, or
    the reason it was skipped), keyed by (shard, key). The replayed epochs are the epochs read from
    disk, batch for batch and skip count for skip count (`SampleDecoder.counted` counts each again)."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget, self.used = budget_bytes, 0
        self.raw: list[dict[str, Any]] | None = None
        """The whole raw stream of one pass, once complete, clean and within the budget."""
        self.decoded: dict[tuple[str, str], dict[str, Any] | SkipSample] = {}
        self.full = False
        """The budget ran out: nothing more is kept (what is kept still serves)."""

    def _take(self, nbytes: int) -> bool:
        if self.full or self.used + nbytes > self.budget:
            self.full = True
            return False
        self.used += nbytes
        return True

    def record_raw(self, src: Iterable[dict[str, Any]], stats: ReadStats) -> Iterator[dict[str, Any]]:
        """Pipeline stage after the duplicate check: passes samples on and keeps the pass when it
        ends with no skip counted upstream (a skip there is counted per pass, so it is read again)."""
        if self.raw is not None:
            yield from src
            return
        kept: list[dict[str, Any]] | None = []
        it, upstream_skips = iter(src), 0
        while True:
            before = stats.num_skipped  # only the stages upstream run inside next(): theirs are counted
            try:
                sample = next(it)
            except StopIteration:
                upstream_skips += stats.num_skipped - before
                break
            upstream_skips += stats.num_skipped - before
            if kept is not None and self._take(sum(len(v) for v in sample.values() if isinstance(v, bytes))):
                kept.append(sample)
            else:
                kept = None
            yield sample
        if kept is not None and not upstream_skips:
            self.raw = kept

    def decoder(self, decoder: SampleDecoder) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
        """`decoder` with each sample's decoding (or skip) kept, served again and counted again."""

        def decode(sample: dict[str, Any]) -> dict[str, Any] | None:
            shard_key = (str(sample.get("__url__")), str(sample.get("__key__")))
            kept = self.decoded.get(shard_key)
            if kept is None:
                kept = decoder.decode_or_skip(sample)
                image = kept.get("image") if isinstance(kept, dict) else None
                if self._take(256 + (image.width * image.height * len(image.getbands()) if image else 0)):
                    self.decoded[shard_key] = kept
            out = decoder.counted(sample, kept)
            if out is None:
                return None
            # a fresh dict per pass: later stages pop from the sample, its meta and its labels
            out = {**out, "meta": dict(out["meta"])}
            if "labels" in out:
                out["labels"] = dict(out["labels"])
            return out

        return decode
