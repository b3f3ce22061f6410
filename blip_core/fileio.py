"""Writes that never leave a partial file under a final name, and one clear error when the disk is full.

Every output the pipeline writes (shards, manifests, score tables, checkpoints, model weights,
stats) goes to a hidden temporary name beside its target and is renamed in only when complete, so
a reader, a resumed run or DVC never sees half a file. When a write fails for lack of space (a full
disk, a quota, or a file-size limit) the temporary file is deleted and `DiskFullError` names the
file that could not be written.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""Out of space: a full disk, an exhausted quota, or the process's file-size limit."""


class DiskFullError(OSError):
    """A write ran out of space; nothing partial was kept."""

    def __init__(self, path: str | Path, cause: OSError | int) -> None:
        code = cause if isinstance(cause, int) else (cause.errno or errno.ENOSPC)
        super().__init__(
            code,
            f"no space to write {path} ({os.strerror(code)}); "
            "the partial file was removed: free space (or raise the limit) and run again",
        )
        self.path = str(path)

    def __reduce__(self):  # crosses process pools (world generation) intact
        return DiskFullError, (self.path, self.errno)

    def __str__(self) -> str:
        return self.strerror


def no_space_error(exc: BaseException | None) -> OSError | None:
    """The out-of-space OSError behind `exc` (itself, or one it was raised from), if any."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def temp_path(path: str | Path) -> Path:
    """The hidden temporary name a write of `path` goes to (`dir/.name.tmp`): readers skip it."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on any failure it is deleted
    (and an out-of-space failure becomes `DiskFullError`)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        cause = no_space_error(e)
        if cause is not None and not isinstance(e, DiskFullError):
            raise DiskFullError(path, cause) from e
        raise


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def json_text(obj: Any, *, sort_keys: bool = True, default: Any = None) -> str:
    """The project's JSON file layout: indented 2, keys sorted (unless a file's order is its
    content), one final newline; `default` turns what JSON cannot hold (paths, numpy scalars) into text."""
    return json.dumps(obj, indent=2, sort_keys=sort_keys, default=default) + "\n"


def digest(obj: Any, length: int = 12) -> str:
    """The project's fingerprint of a JSON-able value (sha256 of its sorted-key JSON; `default=str`
    for paths and the like), its first `length` hex digits: cache keys, step names, run identities."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


def source_hash(paths: tuple[str, ...], *, root: str | Path) -> str:
    """Content hash of source files under `root` (a folder counts its .py and .html files below it; a
    missing path is skipped): a pipeline stage's code deps, the whole code base, the library a
    training run ran on."""
    base = Path(root)
    h = hashlib.sha256()
    for rel in paths:
        p = base / rel
        files = sorted([*p.rglob("*.py"), *p.rglob("*.html")]) if p.is_dir() else [p]
        for f in files:
            if f.is_file():
                h.update(str(f.relative_to(base)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def write_json(path: str | Path, obj: Any, *, sort_keys: bool = True, default: Any = None) -> Path:
    """`json_text(obj)` written atomically."""
    return write_text(path, json_text(obj, sort_keys=sort_keys, default=default))


class _RecordingFile:
    """A binary file that remembers the OSError of a failed write: torch.save reports a failed write
    as a RuntimeError without the errno, so the cause is taken from here."""

    def __init__(self, f) -> None:
        self.f, self.error = f, None

    def write(self, b) -> int:
        try:
            return self.f.write(b)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def torch_save(obj: Any, path: str | Path) -> Path:
    """`torch.save` through `atomic_path`, with out-of-space failures reported as `DiskFullError`."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        rec = _RecordingFile(f)
        try:
            torch.save(obj, rec)
        except RuntimeError as e:
            if rec.error is not None:
                raise rec.error from e
            raise
    return Path(path)


def remove_stale_temps(folder: str | Path, pattern: str = ".*.tmp") -> int:
    """Delete temporary files a killed writer left in `folder` (never read; they only take space)."""
    n = 0
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.glob(pattern):
            p.unlink(missing_ok=True)
            n += 1
    return n


class UnsafeCheckpointError(ValueError):
    """A .pt/.pth file that is not plain tensors and containers: a pickle that would build other
    objects or run code when loaded."""


def safe_torch_load(path: str | Path) -> Any:
    """`torch.load` restricted to tensors and plain containers (`weights_only=True`); anything else
    is refused with one line naming the file, before any of its code runs."""
    import pickle

    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = next((ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln or "Unsupported" in ln), "")
        found = found or "objects outside the allow-list"
        raise UnsafeCheckpointError(
            f"refused to load {path}: it is a pickle of more than tensors ({found}); "
            "only tensor checkpoints are read (safetensors, or .pt/.pth through weights_only)"
        ) from None
