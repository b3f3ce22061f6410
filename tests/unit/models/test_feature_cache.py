"""A frozen tower's outputs computed once per image (TrainConfig.frozen_features_mb)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from blip_core.data.transforms import TrainTransform, eval_transform
from blip_core.models.common.config import VisionConfig
from blip_core.models.common.feature_cache import FeatureCache, attach, same_weights
from blip_core.models.common.vision import create_vision_encoder, encode_image


class Counting:
    """A stand-in tower function that counts the images it ran on."""

    def __init__(self) -> None:
        self.rows = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return x.flatten(1)[:, :4] * 2  # (B, 4)


def test_each_image_runs_once_repeats_in_the_batch_included():
    cache, f = FeatureCache(2**20), Counting()
    x = torch.randn(3, 3, 8, 8)
    batch = torch.cat([x, x[:1]])  # (4, ...): image 0 twice, as the captions of one image
    out = cache(batch, f)
    assert f.rows == 3 and torch.equal(out, batch.flatten(1)[:, :4] * 2)
    assert (cache.hits, cache.misses, len(cache)) == (1, 3, 3)
    again = cache(x[[2, 0]], f)  # a later epoch, another order
    assert f.rows == 3 and torch.equal(again, out[[2, 0]])
    new = torch.randn(1, 3, 8, 8)
    mixed = cache(torch.cat([new, x[1:2]]), f)  # only the new image runs
    assert f.rows == 4 and torch.equal(mixed[1], out[1]) and torch.equal(mixed[0], new.flatten()[:4] * 2)
    assert cache.stats() | {"mb": 0} == {"hits": 4, "misses": 4, "uncached": 0, "images": 4, "mb": 0}


def test_past_the_budget_outputs_are_computed_and_counted():
    one = 4 * 4  # bytes of one (4,) float32 output
    cache, f = FeatureCache(2 * one), Counting()
    x = torch.randn(3, 3, 8, 8)
    assert torch.equal(cache(x, f), x.flatten(1)[:, :4] * 2)
    assert (len(cache), cache.uncached, cache.used) == (2, 1, 2 * one)
    assert torch.equal(cache(x, f), x.flatten(1)[:, :4] * 2)  # the third one runs again
    assert f.rows == 4 and cache.uncached == 2
    with pytest.raises(ValueError, match="positive byte budget"):
        FeatureCache(0)


def _tower() -> torch.nn.Module:
    cfg = VisionConfig(image_size=32, patch_size=8, width=48, depth=1, num_heads=4, stem="conv",
                       stem_channels=[16, 32, 48], stem_strides=[2, 2, 2])  # fmt: skip
    torch.manual_seed(0)
    return create_vision_encoder(cfg)


def test_encode_image_looks_up_only_a_frozen_tower_in_eval_mode():
    tower = _tower().eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        plain = encode_image(tower, x)
    cache = FeatureCache(2**20)
    attach(tower, cache)
    out = encode_image(tower, x)  # weights still trainable: run, not kept
    assert cache.misses == 0 and torch.allclose(out, plain, atol=1e-6)
    tower.requires_grad_(False)
    first, second = encode_image(tower, x), encode_image(tower, x.flip(0))
    assert (cache.misses, cache.hits) == (3, 3)
    assert torch.allclose(first, plain, atol=1e-6) and torch.equal(second, first.flip(0))
    tower.train()  # training-mode BatchNorm is another function: never looked up
    encode_image(tower, x)
    assert (cache.misses, cache.hits) == (3, 3)
    attach(tower, None)
    assert "feature_cache" not in tower.__dict__ and "feature_cache" not in str(tower.state_dict().keys())


def test_same_weights_tells_a_momentum_copy_that_is_still_its_tower():
    a, b = _tower(), _tower()
    assert same_weights(a, b)
    with torch.no_grad():
        b.norm.weight.add_(1e-3)
    assert not same_weights(a, b)


def test_an_uncropped_train_transform_is_the_evaluation_transform():
    img = Image.new("RGB", (48, 40), (200, 30, 30))
    img.paste((10, 10, 240), (5, 5, 20, 20))
    t = TrainTransform(32, None, seed=0)
    for epoch in (0, 3):
        t.epoch = epoch
        assert torch.equal(t(img, "k/0"), eval_transform(img, 32))
    assert t.crop(48, 40, "k/0") == (0, 0, 40, 48)
    assert t.crop_boxes([[0.1, 0.2, 0.5, 0.6]], 48, 40, "k/0")[0] == pytest.approx([0.1, 0.2, 0.5, 0.6])
    cropped = TrainTransform(32, 0.85, seed=0)
    assert not torch.equal(cropped(img, "k/0"), eval_transform(img, 32))
