"""Named model presets. Variants derive by calling a preset and changing fields.

- `tiny`: trains on a 2-core CPU in minutes on the embedded world (64 px images).
- `base`: the paper's ViT-B/16 at 224 px with a 12-layer, 768-wide MED (BERT-base).
- `large`: ViT-L/16 (gradient checkpointing on, as BLIP does) with the same MED.
"""

from __future__ import annotations

from collections.abc import Callable

from blip_core.models.blip.config import ModelConfig
from blip_core.models.common.config import TextConfig, VisionConfig


def tiny() -> ModelConfig:
    return ModelConfig(
        # a hybrid ViT: 5 BatchNorm convs (stride 8 in all) make an 8x8 token grid from 64 px images,
        # then one transformer block. Measured on the make-run world (benchmarks/bench_learning.py):
        # the patch ViT's image features collapse to one point and ITC stays at chance for hundreds of
        # steps; this tower learns colours from the first ~100 steps. An 8 px grid beat a 16 px one at
        # equal steps (small objects are ~9 px across).
        vision=VisionConfig(
            image_size=64,
            patch_size=8,
            width=128,
            depth=1,
            num_heads=4,
            layer_norm_eps=1e-6,
            stem="conv",
            stem_channels=[32, 64, 64, 128, 128],
            stem_strides=[2, 1, 2, 1, 2],
            # position must survive the supervised start (labels never need it) for relations
            pos_embed_init="sincos",
        ),
        text=TextConfig(
            vocab_size=1200,
            hidden_size=128,
            num_layers=4,
            num_heads=4,
            intermediate_size=512,
            max_position_embeddings=64,
            max_text_len=32,
            initializer_range=0.08,  # ~1/sqrt(width): with BERT's 0.02 all captions start collapsed
            # ids of the world tokenizer (models.common.tokenizer.train_tokenizer); with_tokenizer() resets them
            pad_token_id=0,
            cls_token_id=2,
            sep_token_id=3,
            bos_token_id=5,
            enc_token_id=6,
        ),
        embed_dim=128,
        queue_size=2048,
        itc_online_batch=True,  # from-scratch towers: see ModelConfig.itc_online_batch
    )


def tiny_vit() -> ModelConfig:
    """`tiny` with BLIP's own tower, a patch ViT (16 px patches, 4 blocks): the reference that
    benchmarks/bench_learning.py measures `tiny` against."""
    cfg = tiny()
    cfg.vision = VisionConfig(image_size=64, patch_size=16, width=128, depth=4, num_heads=4, layer_norm_eps=1e-6)
    return cfg


def base() -> ModelConfig:
    return ModelConfig(vision=VisionConfig(), text=TextConfig(), embed_dim=256, queue_size=57600)


def large() -> ModelConfig:
    cfg = base()
    cfg.vision = VisionConfig(width=1024, depth=24, num_heads=16, grad_checkpointing=True, drop_path_rate=0.1)
    return cfg


def with_tokenizer(cfg: ModelConfig, tokenizer) -> ModelConfig:
    """Set the vocabulary size and special token ids from a loaded tokenizer (in place)."""
    set_text_ids(cfg.text, tokenizer)
    return cfg


def set_text_ids(t: TextConfig, tokenizer) -> None:
    """A text config's vocabulary size and special token ids from a loaded tokenizer (in place)."""
    t.vocab_size = len(tokenizer)
    t.pad_token_id, t.cls_token_id, t.sep_token_id = (
        tokenizer.pad_token_id,
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
    )
    t.bos_token_id, t.enc_token_id = tokenizer.bos_token_id, tokenizer.enc_token_id
    t.__post_init__()


PRESETS: dict[str, Callable[[], ModelConfig]] = {"tiny": tiny, "tiny_vit": tiny_vit, "base": base, "large": large}


def get_preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]()
