"""Named model presets. Variants derive by calling a preset and changing fields.

- `tiny`: trains on a 2-core CPU in minutes on the embedded world (64 px images).
- `base`: the paper's ViT-B/16 at 224 px with a 12-layer, 768-wide MED (BERT-base).
- `large`: ViT-L/16 (gradient checkpointing on, as BLIP does) with the same MED.
"""

from __future__ import annotations

from collections.abc import Callable

from blip_core.config import ModelConfig, TextConfig, VisionConfig


def tiny() -> ModelConfig:
    return ModelConfig(
        # 16 px patches on 64 px images (16 tokens) and 128-wide towers: ~0.6 s per batch of 64 for
        # ITC+ITM+LM on 2 CPU cores (8 px patches cost ~4x more for the vision tower)
        vision=VisionConfig(image_size=64, patch_size=16, width=128, depth=4, num_heads=4, layer_norm_eps=1e-6),
        text=TextConfig(
            vocab_size=1200,
            hidden_size=128,
            num_layers=4,
            num_heads=4,
            intermediate_size=512,
            max_position_embeddings=64,
            max_text_len=32,
            initializer_range=0.08,  # ~1/sqrt(width): with BERT's 0.02 all captions start collapsed
            # ids of the world tokenizer (blip_core.model.tokenizer.train_tokenizer); with_tokenizer() resets them
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


def base() -> ModelConfig:
    return ModelConfig(vision=VisionConfig(), text=TextConfig(), embed_dim=256, queue_size=57600)


def large() -> ModelConfig:
    cfg = base()
    cfg.vision = VisionConfig(width=1024, depth=24, num_heads=16, grad_checkpointing=True, drop_path_rate=0.1)
    return cfg


def with_tokenizer(cfg: ModelConfig, tokenizer) -> ModelConfig:
    """Set the vocabulary size and special token ids from a loaded tokenizer (in place)."""
    t = cfg.text
    t.vocab_size = len(tokenizer)
    t.pad_token_id, t.cls_token_id, t.sep_token_id = (
        tokenizer.pad_token_id,
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
    )
    t.bos_token_id, t.enc_token_id = tokenizer.bos_token_id, tokenizer.enc_token_id
    t.__post_init__()
    return cfg


PRESETS: dict[str, Callable[[], ModelConfig]] = {"tiny": tiny, "base": base, "large": large}


def get_preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]()
