"""Helpers for tests that build raw shards by hand."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from PIL import Image

from blip_core.config import WorldConfig


def jpeg_bytes(size: tuple[int, int] = (32, 32), color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def write_raw_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """Write a tar with exactly these (name, bytes) members, in order (duplicates allowed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def sample_members(key: str, caption: str = "a red square", *, image: bytes | None = None) -> list[tuple[str, bytes]]:
    return [
        (f"{key}.jpg", image if image is not None else jpeg_bytes()),
        (f"{key}.txt", caption.encode()),
        (f"{key}.json", json.dumps({"key": key, "captions": [caption]}).encode()),
    ]


def tiny_world_config(**overrides) -> WorldConfig:
    cfg = WorldConfig(
        seed=7, num_coco_train=40, num_web=240, num_val=8, num_test=8, num_novel=12, shard_size=100, num_workers=2
    )
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg
