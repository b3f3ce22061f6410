"""Vision towers: BLIP's patch ViT and the hybrid conv-stem ViT of the `tiny` preset."""

from __future__ import annotations

import pytest
import torch
from helpers import micro_config, text_batch

from blip_core.models.blip.config import ModelConfig
from blip_core.models.blip.convert_hf import ours_to_hf_config
from blip_core.models.blip.model import BlipPretrain
from blip_core.models.blip.presets import get_preset
from blip_core.models.common.config import VisionConfig
from blip_core.models.common.vision import HybridViT, create_vision_encoder


def _conv(**kw) -> VisionConfig:
    base = dict(image_size=32, patch_size=8, width=48, depth=1, num_heads=4, stem="conv")
    return VisionConfig(**(base | dict(stem_channels=[16, 32, 48], stem_strides=[2, 2, 2]) | kw))


def test_conv_stem_tokens_and_pooled_first_token():
    vit = create_vision_encoder(_conv())
    assert isinstance(vit, HybridViT)
    vit.eval()
    x = torch.randn(3, 3, 32, 32)
    out = vit.forward_features(x)
    assert out.shape == (3, 1 + 16, 48)  # [CLS]-position token + a 4x4 grid
    assert not torch.allclose(out[0, 0], out[1, 0])
    # without blocks, token 0 is exactly the grid mean (+ its position embedding): image-dependent from step 0
    bare = create_vision_encoder(_conv()).eval()
    bare.blocks = torch.nn.Sequential()
    grid = bare.stem(x).flatten(2).transpose(1, 2)  # (B, P, D)
    assert torch.allclose(bare.forward_features(x)[:, 0], bare.norm(grid.mean(1) + bare.pos_embed[0, 0]), atol=1e-6)


def test_conv_stem_grad_checkpointing_matches():
    torch.manual_seed(0)
    vit = create_vision_encoder(_conv(depth=2))
    x = torch.randn(2, 3, 32, 32)
    vit.train()
    ref = vit.forward_features(x).sum()
    vit.set_grad_checkpointing(True)
    assert torch.allclose(vit.forward_features(x).sum(), ref, rtol=1e-5)


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(stem="other"), "vision.stem"),
        (dict(stem_strides=[2, 2]), "equal length"),
        (dict(stem_strides=[2, 2, 1]), "product is patch_size"),
        (dict(stem_channels=[16, 32, 64]), "end at width"),
        (dict(stem_norm="layer"), "stem_norm"),
        (dict(pos_embed_init="rope"), "pos_embed_init"),
    ],
)
def test_conv_stem_config_errors_name_the_key(kw, msg):
    with pytest.raises(ValueError, match=msg):
        _conv(**kw)


def test_patch_stem_rejects_conv_knobs():
    with pytest.raises(ValueError, match="only used with vision.stem: conv"):
        VisionConfig(image_size=32, patch_size=8, width=48, depth=1, num_heads=4, stem_channels=[48], stem_strides=[8])


def test_tiny_preset_uses_the_conv_stem_and_group_norm_variant_builds():
    cfg = get_preset("tiny")
    assert cfg.vision.stem == "conv" and cfg.vision.num_patches == 64
    cfg.vision.stem_norm = "group"
    vit = create_vision_encoder(cfg.vision)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in vit.modules())
    assert get_preset("tiny_vit").vision.stem == "patch"


def test_conv_stem_model_cannot_be_exported_to_hugging_face():
    with pytest.raises(ValueError, match="only the ViT patch stem"):
        ours_to_hf_config(ModelConfig(vision=_conv()))


def test_pretrain_model_with_conv_stem_trains_only_the_online_tower():
    cfg = micro_config()
    cfg.vision = _conv()
    model = BlipPretrain(cfg)
    ids, mask = text_batch(B=4)
    out = model(torch.randn(4, 3, 32, 32), ids, mask, torch.arange(4))
    sum(v for k, v in out.items() if k.endswith("_loss")).backward()
    assert model.visual_encoder.stem[0].conv.weight.grad is not None
    assert model.visual_encoder_m.stem[0].conv.weight.grad is None


def test_sincos_position_start_makes_tokens_say_where_they_are():
    """`pos_embed_init: sincos` (the tiny preset): the grid tokens start at MAE's 2D sin-cos position
    embedding (token 0, the pooled one, at none), so a linear map reads a token's grid row and column
    from the tower's output even before any training; the N(0, 0.02) start barely shows them."""
    from sklearn.linear_model import Ridge

    def position_r2(init: str) -> float:
        torch.manual_seed(0)
        vit = create_vision_encoder(_conv(pos_embed_init=init)).eval()
        with torch.no_grad():
            tokens = vit.forward_features(torch.randn(24, 3, 32, 32))[:, 1:]  # (B, 16, D)
        x = tokens.reshape(-1, tokens.shape[-1]).numpy()
        y = [(i // 4, i % 4) for _ in range(24) for i in range(16)]
        return Ridge(alpha=1.0).fit(x[:192], y[:192]).score(x[192:], y[192:])

    vit = create_vision_encoder(_conv(pos_embed_init="sincos"))
    assert torch.equal(vit.pos_embed[0, 0], torch.zeros(48)) and vit.pos_embed.requires_grad
    assert position_r2("sincos") > 0.9 > position_r2("normal") + 0.3
    with pytest.raises(ValueError, match="only used with vision.stem: conv"):
        VisionConfig(pos_embed_init="sincos")
