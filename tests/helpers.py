"""Helpers for tests that build raw shards by hand."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import torch
from PIL import Image

from blip_core.config.data import WorldConfig
from blip_core.models.blip.config import ModelConfig
from blip_core.models.common.config import TextConfig, VisionConfig


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
        seed=7,
        num_coco_train=40,
        num_web=240,
        num_val=8,
        num_test=8,
        num_novel=12,
        num_objects=120,
        vqa_per_image=2,
        num_nlvr_train=32,
        num_nlvr_test=8,
        num_nlvr_novel=8,
        num_video_test=8,
        num_video_novel=8,
        shard_size=100,
        num_workers=2,
    )
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def micro_config(**kw) -> ModelConfig:
    cfg = ModelConfig(
        vision=VisionConfig(image_size=32, patch_size=8, width=48, depth=2, num_heads=4),
        text=TextConfig(
            vocab_size=120,
            hidden_size=32,
            num_layers=2,
            num_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            max_text_len=32,
            pad_token_id=0,
            cls_token_id=2,
            sep_token_id=3,
            bos_token_id=5,
            enc_token_id=6,
        ),
        embed_dim=16,
        queue_size=16,
    )
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def text_batch(B=4, L=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(7, 120, (B, L), generator=g)
    ids[:, 0] = 2
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    ids[1, 6:] = 0
    return ids, mask


def micro_params(path, **sections) -> Path:
    """The repo's params.yaml shrunk so the whole bootstrap chain runs in about a minute on CPU (world
    of ~300 images, a few optimizer steps per training, loosened data-quality bands for untrained
    models). Every key of the real file stays present, as DVC's `params:` need."""
    import yaml

    doc = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    micro = {
        "world": {"seed": 7, "num_coco_train": 40, "num_web": 240, "num_val": 8, "num_test": 8, "num_novel": 12,
                  "num_objects": 64, "shard_size": 100, "num_workers": 1, "vqa_per_image": 2, "num_nlvr_train": 32,
                  "num_nlvr_test": 8, "num_nlvr_novel": 8, "num_video_test": 8, "num_video_novel": 8},
        "tokenizer": {"vocab_size": 400},
        "pretrain_vision": {"batch_size": 8, "max_steps": 3, "warmup_steps": 1, "shuffle_buffer": 50, "log_every": 1},
        "pretrain": {"batch_size": 8, "max_steps": 3, "warmup_steps": 1, "shuffle_buffer": 50, "log_every": 1},
        "finetune_caption": {"batch_size": 8, "max_steps": 2, "warmup_steps": 1, "shuffle_buffer": 50,
                             "count_statements": 4},
        "finetune_retrieval": {"batch_size": 8, "max_steps": 2, "warmup_steps": 1, "shuffle_buffer": 50,
                               "count_statements": 8},  # 8 + 8 divides the ITC queue
        "finetune_vqa": {"batch_size": 8, "max_steps": 2, "warmup_steps": 1},
        "finetune_nlvr": {"batch_size": 8, "max_steps": 2, "warmup_steps": 1},
        "evaluate": {"batch_size": 16, "k_test": 4, "max_images": 8, "num_beams": 2, "max_length": 12},
        "capfilt": {"caption_batch_size": 32, "filter_batch_size": 32, "max_length": 12},
        "validate": {"keep_rate_min": 0.0, "keep_rate_max": 1.0, "max_kept_over_raw": 100.0},
    }  # fmt: skip
    for name, values in (micro | sections).items():
        doc.setdefault(name, {}).update(values)
    Path(path).write_text(yaml.safe_dump(doc, sort_keys=False))
    return Path(path)


def micro_capfilt_models(world: Path, root: Path) -> tuple[Path, Path]:
    """An untrained micro captioner and filter (with a tokenizer trained on `world`) under `root`."""
    from blip_core.models import pretrained
    from blip_core.models.blip.presets import with_tokenizer
    from blip_core.models.common.tokenizer import load_tokenizer
    from flows.stages import stage_tokenizer

    stage_tokenizer([world / "coco_train", world / "web"], root / "tok")
    tok = load_tokenizer(root / "tok")
    cfg = with_tokenizer(micro_config(), tok)
    cfg.tokenizer = str(root / "tok")
    torch.manual_seed(0)
    pretrained.save_pretrained(pretrained.create_model("captioner", cfg), root / "captioner", tokenizer=tok)
    pretrained.save_pretrained(pretrained.create_model("retrieval", cfg), root / "filter", tokenizer=tok)
    return root / "captioner", root / "filter"


def prefect_subprocess_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for a subprocess that runs Prefect flows on its own throwaway API and imports this
    checkout (a flow run in the test process would leave threading exit hooks behind)."""
    import os

    repo = str(Path(__file__).resolve().parents[1])
    return (
        os.environ
        | {
            "PREFECT_HOME": str(tmp_path / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # the throwaway API starts in ~5 s alone but past Prefect's 20 s default on 2 busy CPUs
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
            "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]),
        }
        | extra
    )


_REPO = Path(__file__).resolve().parents[1]


def repo_clone(tmp_path: Path, sections: dict | None = None, **capfilt) -> tuple[Path, dict]:
    """The repo's tracked files in a fresh git repository, with micro params (`capfilt` and other
    `sections` merged in); and the env to run in it."""
    clone = tmp_path / "clone"
    files = subprocess.run(["git", "ls-files"], cwd=_REPO, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (_REPO / f).is_file():
            (clone / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(_REPO / f, clone / f)
    micro_params(clone / "params.yaml", capfilt={"caption_batch_size": 32, "filter_batch_size": 32, "max_length": 12}
                 | capfilt, **(sections or {}))  # fmt: skip
    env = os.environ | {"BLIP_GX_ROOT": str(clone), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=clone, check=True)
    subprocess.run([*git, "add", "-A"], cwd=clone, check=True)
    subprocess.run([*git, "commit", "-qm", "clone"], cwd=clone, check=True)
    return clone, env
