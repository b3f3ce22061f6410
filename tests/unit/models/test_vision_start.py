"""The vision start: our vision checkpoints and timm-layout (DeiT) state dicts load into BLIP's towers."""

from __future__ import annotations

import pytest
import torch
from helpers import micro_config
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from blip_core.models import pretrained
from blip_core.models.blip.classifier import VisionClassifier
from blip_core.models.blip.model import BlipPretrain, BlipRetrieval
from blip_core.models.blip.presets import base, tiny
from blip_core.models.common import vision_start


def _same_tower(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _classifier(cfg, seed: int = 3) -> VisionClassifier:
    cfg.classes = {"shape": ["circle", "star"], "color": ["red", "blue", "green"]}
    torch.manual_seed(seed)
    return VisionClassifier(cfg)


def test_classifier_loss_per_group_and_prediction():
    clf = _classifier(tiny())
    images = torch.randn(4, 3, 64, 64)
    labels = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 0, 1, 1], [1, 1, 0, 0, 1], [0, 1, 1, 0, 0]], dtype=torch.float)
    out = clf(images, labels)
    assert set(k for k in out if k.endswith("_loss")) == {"shape_loss", "color_loss"}
    assert out["logits"].shape == (4, 5)
    # averaged over each group's classes: each group weighs the same
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out["logits"][:, :2], labels[:, :2])
    assert out["shape_loss"].item() == pytest.approx(expected.item())
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out["logits"][:, 2:], labels[:, 2:])
    assert out["color_loss"].item() == pytest.approx(expected.item())
    pred = clf.predict(images)
    assert pred["shape"].shape == (4, 2) and pred["color"].shape == (4, 3)


def test_a_scene_label_is_scored_on_the_cls_token_alone():
    """Background labels the whole image: its logits are [CLS]'s, the grid tokens' max only pools the
    object groups (a grid token is not asked to carry the background)."""
    cfg = tiny()
    cfg.classes = {"shape": ["circle", "star"], "background": ["plain", "striped", "dotted"]}
    torch.manual_seed(0)
    clf = VisionClassifier(cfg).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        per_token = clf.head(clf.image_embeds(images))
        logits = clf.logits(images)
    assert torch.allclose(logits[:, 2:], per_token[:, 0, 2:])
    assert torch.allclose(logits[:, :2], 0.5 * (per_token[:, 0, :2] + per_token[:, 1:, :2].amax(dim=1)))
    assert "scene_classes" not in clf.state_dict()  # derived from the classes, not saved


def _region_classifier(seed: int = 0) -> VisionClassifier:
    cfg = tiny()
    cfg.classes = {"shape": ["circle", "star"], "region": ["shape:circle", "shape:star", "color:red", "color:blue"]}
    torch.manual_seed(seed)
    return VisionClassifier(cfg)


def _regions(boxes: list[list[list[float]]], classes: list[list[list[int]]]) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes), "classes": torch.tensor(classes)}


def test_region_targets_give_each_token_its_box_or_none():
    """A token takes the attributes of the box holding its centre; a token in no box is "none" (the
    last class of each attribute); a padded box (-1) holds no token."""
    clf = _region_classifier()
    assert clf.region_groups == [("shape", 3), ("color", 3)]
    regions = _regions(
        [[[0.0, 0.0, 1 / 3, 1 / 3], [1 / 3, 2 / 3, 2 / 3, 1.0]], [[0.5, 0.5, 1.0, 1.0], [-1, -1, -1, -1]]],
        [[[0, 1], [1, 0]], [[1, 1], [-1, -1]]],
    )
    targets = clf.region_targets(regions, 64)  # (B, 64 tokens of an 8x8 grid, 2 attributes)
    shape = targets[..., 0].view(2, 8, 8)
    assert (shape[0, :3, :3] == 0).all() and (shape[0, 5:, 3:5] == 1).all()  # circle top-left, star bottom-middle
    assert (shape[0] == 2).sum() == 64 - 9 - 6  # the rest: none
    assert (targets[1, :, 1].view(8, 8)[4:, 4:] == 1).all() and (targets[1, :, 1].view(8, 8)[:4] == 2).all()


def test_region_loss_learns_which_attribute_is_where():
    """Over-fit: a handful of images whose objects' attributes and places the head must read back."""
    torch.manual_seed(0)
    clf = _region_classifier()
    images = torch.randn(4, 3, 64, 64)
    labels = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 1]], dtype=torch.float)
    regions = _regions(
        [[[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]], [[0.5, 0, 1, 0.5], [-1] * 4], [[0, 0.5, 0.5, 1], [0, 0, 0.5, 0.5]],
         [[0, 0, 1, 0.5], [-1] * 4]],
        [[[0, 0], [1, 1]], [[1, 0], [-1, -1]], [[0, 1], [1, 1]], [[1, 1], [-1, -1]]],
    )  # fmt: skip
    opt = torch.optim.AdamW(clf.parameters(), lr=2e-3)
    clf.train()
    first = None
    for _ in range(60):
        out = clf(images, labels, regions)
        assert set(k for k in out if k.endswith("_loss")) == {"shape_loss", "region_loss"}
        first = first if first is not None else out["region_loss"].item()
        opt.zero_grad()
        (out["shape_loss"] + out["region_loss"]).backward()
        opt.step()
    assert out["region_loss"].item() < 0.2 * first
    clf.eval()
    pred = clf.predict_regions(images, regions["boxes"])
    real = regions["classes"] >= 0
    assert torch.equal(pred["shape"][real[..., 0]], regions["classes"][..., 0][real[..., 0]])
    assert torch.equal(pred["color"][real[..., 1]], regions["classes"][..., 1][real[..., 1]])
    with pytest.raises(ValueError, match="regions"):
        clf(images, labels)  # region labels configured: a batch without them is a clear error


def test_our_vision_checkpoint_starts_both_towers_and_drops_the_head(tmp_path):
    clf = _classifier(tiny())
    pretrained.save_pretrained(clf, tmp_path / "vision")
    torch.manual_seed(0)
    cfg = tiny()
    cfg.text.vocab_size = 64
    model = BlipPretrain(cfg)
    assert not _same_tower(model.visual_encoder, clf.visual_encoder)
    info = vision_start.load_vision_start(model, tmp_path / "vision")
    assert _same_tower(model.visual_encoder, clf.visual_encoder)
    assert _same_tower(model.visual_encoder_m, clf.visual_encoder)  # the momentum copy starts equal
    assert info["vision_init_tensors"] == len(clf.visual_encoder.state_dict())


def test_a_different_tower_is_a_clear_error(tmp_path):
    pretrained.save_pretrained(_classifier(tiny()), tmp_path / "vision")
    other = tiny()
    other.vision.depth = 2
    other.text.vocab_size = 64
    with pytest.raises(ValueError, match="differs from the model's"):
        vision_start.load_vision_start(BlipRetrieval(other), tmp_path / "vision")
    with pytest.raises(FileNotFoundError, match="vision start not found"):
        vision_start.load_vision_start(BlipRetrieval(other), tmp_path / "nowhere")


def _timm_vit(width: int, depth: int, heads: int, img_size: int, **kw) -> VisionTransformer:
    torch.manual_seed(1)
    return VisionTransformer(img_size=img_size, patch_size=16, embed_dim=width, depth=depth, num_heads=heads,
                             num_classes=1000, **kw)  # fmt: skip


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_base_width_start_from_a_timm_layout_file(tmp_path, fmt):
    """BLIP's real recipe: ViT-B from a DeiT-B (timm layout) state dict, classification head dropped.
    A random-weight ViT-B in timm's layout stands in for deit_base_patch16_224.pth (no download)."""
    deit = _timm_vit(768, 12, 12, 224)
    state = deit.state_dict()
    assert "head.weight" in state
    path = tmp_path / f"deit.{fmt}"
    if fmt == "pth":
        torch.save({"model": state, "epoch": 300}, path)  # DeiT's release layout
    else:
        save_file(state, str(path))
    cfg = base()
    cfg.text.num_layers, cfg.text.vocab_size, cfg.queue_size = 1, 64, 64  # the vision tower is what matters
    model = BlipRetrieval(cfg)
    vision_start.load_vision_start(model, path)
    got = model.visual_encoder.state_dict()
    for k, v in state.items():
        if not k.startswith("head."):
            assert torch.equal(got[k], v), k
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model.image_embeds(images), deit.forward_features(images), atol=1e-4)


def test_timm_start_at_another_resolution_and_distilled_deit(tmp_path):
    """Position embeddings are resized to the model's grid; DeiT-distilled's [DIST] token is dropped."""
    small = micro_config()
    small.vision.image_size, small.vision.patch_size, small.vision.width, small.vision.num_heads = 64, 16, 48, 4
    vit = _timm_vit(48, 2, 4, 32)  # a 2x2 grid, loaded into a 4x4 one
    state = vit.state_dict()
    state["dist_token"] = torch.randn(1, 1, 48)
    state["pos_embed"] = torch.cat([state["pos_embed"][:, :1], torch.randn(1, 1, 48), state["pos_embed"][:, 1:]], 1)
    state["head_dist.weight"] = torch.randn(10, 48)
    torch.save(state, tmp_path / "deit_distilled.pth")
    model = BlipRetrieval(small)
    vision_start.load_vision_start(model, tmp_path / "deit_distilled.pth")
    assert model.visual_encoder.pos_embed.shape == (1, 17, 48)
    assert torch.equal(model.visual_encoder.pos_embed[:, 0], vit.pos_embed[:, 0])  # [CLS] position kept
    assert torch.equal(model.visual_encoder.blocks[1].attn.qkv.weight, vit.blocks[1].attn.qkv.weight)


def test_a_file_that_does_not_fit_names_what_is_missing(tmp_path):
    save_file({"cls_token": torch.zeros(1, 1, 48)}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ValueError, match="missing"):
        vision_start.load_vision_start(BlipRetrieval(micro_config()), tmp_path / "partial.safetensors")


def test_relation_labels_are_learned_on_the_tokens_of_each_box():
    """Over-fit: the relation head reads, on each box's tokens, the relations its object is the
    subject of (multi-label); tokens outside every box are the subject of none."""
    cfg = tiny()
    cfg.classes = {"region": ["shape:circle", "shape:star"], "relation": ["left_of", "right_of", "above"]}
    torch.manual_seed(0)
    clf = VisionClassifier(cfg)
    images = torch.randn(3, 3, 64, 64)
    regions = _regions(
        [[[0, 0, 0.5, 0.5], [0.5, 0, 1, 0.5]], [[0, 0.5, 0.5, 1], [-1] * 4], [[0, 0, 0.5, 0.5], [0, 0.5, 0.5, 1]]],
        [[[0], [1]], [[0], [-1]], [[1], [0]]],
    )
    regions["relations"] = torch.tensor(
        [[[1, 0, 0], [0, 1, 0]], [[0, 0, 0], [0, 0, 0]], [[0, 0, 1], [0, 0, 0]]], dtype=torch.float
    )
    targets = clf.relation_targets(regions, 64)  # (B, P, K)
    assert targets[0].view(8, 8, 3)[:4, :4, 0].all() and not targets[0].view(8, 8, 3)[4:].any()
    opt = torch.optim.AdamW(clf.parameters(), lr=2e-3)
    for _ in range(60):
        out = clf(images, torch.zeros(3, 0), regions)
        opt.zero_grad()
        (out["region_loss"] + out["relation_loss"]).backward()
        opt.step()
    clf.eval()
    pred = clf.predict_regions(images, regions["boxes"])["relation"]
    real = regions["classes"][..., 0] >= 0
    assert torch.equal(pred[real], regions["relations"][real].bool())
