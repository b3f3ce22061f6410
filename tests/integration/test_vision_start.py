"""The supervised vision start in training: pretrain_vision, both pre-trainings load it, and the
knobs that keep it (frozen, lr multiplier, freeze-then-unfreeze, layer-wise decay)."""

from __future__ import annotations

import json

import pytest
import torch

from blip_core.config.train import TrainConfig
from blip_core.models.blip.classifier import VisionClassifier
from blip_core.models.pretrained import load_pretrained
from blip_core.train.entry import build_model, run_training
from blip_core.train.optim import create_optimizer


@pytest.fixture(scope="module")
def tokenizer_dir(tiny_world, tmp_path_factory):
    from flows.stages import stage_tokenizer

    out = tmp_path_factory.mktemp("tok")
    stage_tokenizer([tiny_world / "coco_train", tiny_world / "web"], out)
    return out


@pytest.fixture(scope="module")
def vision_start(tiny_world, tmp_path_factory):
    """pretrain_vision on the tiny world's objects split, scored on val (as the pipeline stage)."""
    from flows.stages import stage_pretrain_vision

    out = tmp_path_factory.mktemp("vision")
    params = out / "p.yaml"
    params.write_text("pretrain_vision:\n  task: vision\n  batch_size: 16\n  epochs: 3\n  max_steps: 12\n  lr: 0.002\n"
                      "  warmup_steps: 2\n  shuffle_buffer: 50\n  log_every: 1\n  ckpt_every: 6\n")  # fmt: skip
    summary = stage_pretrain_vision([tiny_world / "objects"], out / "run", eval_dir=tiny_world / "val", params=params)
    return out / "run", summary


def test_pretrain_vision_with_region_labels_learns_each_object_at_its_box(tiny_world, tmp_path):
    """Per-object boxes through the whole stage: the world writes them, the loader crops them with
    the image, the classifier trains on them per token (region_loss falls) and the stage reads each
    val object back at its box."""
    from flows.stages import stage_pretrain_vision

    world = tiny_world
    params = tmp_path / "p.yaml"
    params.write_text("pretrain_vision:\n  task: vision\n  batch_size: 16\n  epochs: 20\n  max_steps: 120\n"
                      "  lr: 0.002\n  warmup_steps: 2\n  shuffle_buffer: 50\n  log_every: 1\n"
                      "  ckpt_every: 120\n")  # fmt: skip
    summary = stage_pretrain_vision([world / "objects"], tmp_path / "run", eval_dir=world / "val", params=params)
    model = load_pretrained(tmp_path / "run" / "model")
    assert "region" in model.cfg.classes and model.region_head is not None
    losses = [json.loads(line)["region_loss"] for line in (tmp_path / "run" / "losses.jsonl").read_text().splitlines()]
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5])
    val = summary["val"]
    assert {"region_shape", "region_color", "region_size", "region_object"} <= set(val)
    # 120 steps (0.76 measured): colours are the first thing it reads (chance ~0.1; "none" everywhere: 0)
    assert val["region_color"]["accuracy"] > 0.4


def _cfg(**kw) -> TrainConfig:
    base = dict(task="pretrain", preset="tiny", batch_size=8, max_steps=3, lr=1e-3, warmup_steps=1, seed=0,
                shuffle_buffer=50, ckpt_every=3, log_every=1)  # fmt: skip
    return TrainConfig(**(base | kw))


def _tower(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.visual_encoder.state_dict().items()}


def test_pretrain_vision_trains_a_classifier_and_scores_it(vision_start):
    run, summary = vision_start
    model = load_pretrained(run / "model")
    assert isinstance(model, VisionClassifier)
    assert set(model.cfg.classes) == {"shape", "color", "background", "region"} and len(model.cfg.classes["shape"]) == 8
    losses = [json.loads(line) for line in (run / "losses.jsonl").read_text().splitlines()]
    assert len(losses) == 12 and {"shape_loss", "color_loss", "background_loss", "region_loss"} <= set(losses[0])
    assert losses[-1]["loss"] < losses[0]["loss"]
    for group in ("shape", "color"):
        assert 0.0 <= summary["val"][group]["f1"] <= 1.0 and 0.0 <= summary["val"][group]["exact"] <= 1.0
    assert json.loads((run / "train_summary.json").read_text())["val"] == summary["val"]


def test_both_pretrainings_start_from_the_same_tower(tiny_world, tokenizer_dir, vision_start, tmp_path):
    """Baseline and bootstrapped pre-training build their models the same way from one start: equal
    vision towers (and momentum copies), while the text side is the seed's random init."""
    run, _ = vision_start
    start = load_pretrained(run / "model").visual_encoder.state_dict()
    a, _ = build_model(_cfg(), init=None, tokenizer=tokenizer_dir, vision_init=run / "model")
    b, _ = build_model(_cfg(), init=None, tokenizer=tokenizer_dir, vision_init=run / "model")
    scratch, _ = build_model(_cfg(), init=None, tokenizer=tokenizer_dir)
    for m in (a, b):
        for tower in (m.visual_encoder, m.visual_encoder_m):
            assert all(torch.equal(tower.state_dict()[k], v) for k, v in start.items())
    assert torch.equal(a.text_proj.weight, scratch.text_proj.weight)  # the text init is unchanged
    # the pipeline: both pre-training stages get the pretrain_vision output as vision_init and dependency
    from flows import dag

    stages = {s.name: s for s in dag.stages("params.yaml")}
    vision = stages["pretrain_vision"].outs[0]
    for name in ("pretrain_baseline", "pretrain_bootstrapped"):
        assert stages[name].kwargs["vision_init"] == vision and vision in stages[name].deps
    assert "vision_init" not in stages["finetune_caption_baseline"].kwargs
    assert list(stages).index("pretrain_vision") < list(stages).index("pretrain_baseline")


def test_a_frozen_tower_stays_exactly_the_start(tiny_world, tokenizer_dir, vision_start, tmp_path):
    run, _ = vision_start
    start = load_pretrained(run / "model").visual_encoder.state_dict()
    run_training(_cfg(vision_lr_scale=0.0), [tiny_world / "coco_train"], tmp_path / "frozen", tokenizer=tokenizer_dir,
                 vision_init=run / "model")  # fmt: skip
    model = load_pretrained(tmp_path / "frozen" / "model")
    for tower in (model.visual_encoder, model.visual_encoder_m):  # BatchNorm statistics included
        assert all(torch.equal(tower.state_dict()[k], v) for k, v in start.items())
    resolved = json.loads((tmp_path / "frozen" / "resolved_config.json").read_text())
    assert resolved["vision_init"] == str(run / "model")
    # the text side did train
    assert not torch.equal(
        model.text_proj.weight, build_model(_cfg(), init=None, tokenizer=tokenizer_dir)[0].text_proj.weight
    )


def test_freeze_then_unfreeze(tiny_world, tokenizer_dir, vision_start, tmp_path, monkeypatch):
    """Frozen for the first `vision_freeze_steps` steps, then trained."""
    from blip_core.train.loop import Trainer

    run, _ = vision_start
    start = load_pretrained(run / "model").visual_encoder.state_dict()
    seen = []
    real = Trainer.train_step

    def record(self, batches):
        out = real(self, batches)
        same = all(torch.equal(self.model.visual_encoder.state_dict()[k], v) for k, v in start.items())
        seen.append(same)
        return out

    monkeypatch.setattr(Trainer, "train_step", record)
    run_training(_cfg(max_steps=4, vision_freeze_steps=2, vision_lr_scale=0.5), [tiny_world / "coco_train"],
                 tmp_path / "ftu", tokenizer=tokenizer_dir, vision_init=run / "model")  # fmt: skip
    assert seen == [True, True, False, False]


def test_vision_lr_multiplier_and_layer_decay_set_the_group_lrs(tokenizer_dir):
    cfg = _cfg(vision_lr_scale=0.1, vision_layer_decay=0.5)
    model, _ = build_model(cfg, init=None, tokenizer=tokenizer_dir)
    opt = create_optimizer(model, cfg)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    depth = len(model.visual_encoder.blocks)  # tiny: one block -> stem 0.1 * 0.25, block 0.1 * 0.5, norm 0.1
    assert lr_of[id(named["visual_encoder.stem.0.conv.weight"])] == pytest.approx(1e-3 * 0.1 * 0.5 ** (depth + 1))
    assert lr_of[id(named["visual_encoder.blocks.0.attn.qkv.weight"])] == pytest.approx(1e-3 * 0.1 * 0.5**depth)
    assert lr_of[id(named["visual_encoder.norm.weight"])] == pytest.approx(1e-3 * 0.1)
    assert lr_of[id(named["text_proj.weight"])] == pytest.approx(1e-3)
    assert not any(id(p) in lr_of for n, p in named.items() if n.startswith("visual_encoder_m."))
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)  # the logged lr is the base one
    frozen = _cfg(vision_lr_scale=0.0)
    opt = create_optimizer(build_model(frozen, init=None, tokenizer=tokenizer_dir)[0], frozen)
    assert all(g["lr_scale"] > 0 for g in opt.param_groups)


def test_vision_init_names_its_problems(tiny_world, tokenizer_dir, tmp_path):
    with pytest.raises(ValueError, match="names the pipeline stage"):
        run_training(_cfg(vision_init="pretrain_vision"), [tiny_world / "coco_train"], tmp_path / "x",
                     tokenizer=tokenizer_dir)  # fmt: skip
    with pytest.raises(ValueError, match="vision task trains that start"):
        TrainConfig(task="vision", vision_init="somewhere")
    with pytest.raises(ValueError, match="vision_layer_decay"):
        TrainConfig(vision_layer_decay=0.0)
    with pytest.raises(ValueError, match="is not a label-only split"):
        run_training(_cfg(task="vision"), [tiny_world / "coco_train"], tmp_path / "y")


def test_frozen_features_run_the_tower_once_per_image(tiny_world, tokenizer_dir, vision_start, tmp_path):
    """Tower frozen, frozen_features_mb > 0: images uncropped, each image through the tower once over
    three epochs (its captions and the momentum copy, equal to the tower, look it up); the losses are
    those of running the tower every time (a budget too small to keep anything), up to rounding."""
    from blip_core.data.shards import read_manifests

    run, _ = vision_start
    images = len(read_manifests(tiny_world / "coco_train"))
    kw = dict(vision_lr_scale=0.0, max_steps=0, epochs=3, ckpt_every=100)
    kept = run_training(_cfg(frozen_features_mb=64, **kw), [tiny_world / "coco_train"], tmp_path / "kept",
                        tokenizer=tokenizer_dir, vision_init=run / "model")  # fmt: skip
    (stats,) = kept["frozen_features"]  # one cache: the momentum copy shares the tower's
    lookups = 2 * kept["steps"] * 8  # online + momentum tower, batch 8
    assert stats["misses"] <= images and stats["uncached"] == 0
    assert stats["hits"] + stats["misses"] == lookups and stats["hits"] > 0.8 * lookups
    rerun = run_training(_cfg(frozen_features_mb=0, **kw) , [tiny_world / "coco_train"], tmp_path / "crop",
                         tokenizer=tokenizer_dir, vision_init=run / "model")  # fmt: skip
    assert rerun["frozen_features"] == []  # off: cropped every epoch, no cache
    tiny = _cfg(frozen_features_mb=1, **kw)
    object.__setattr__(tiny, "frozen_features_mb", 1e-6)  # a budget below one image's output: nothing kept
    every = run_training(tiny, [tiny_world / "coco_train"], tmp_path / "every", tokenizer=tokenizer_dir,
                         vision_init=run / "model")  # fmt: skip
    assert every["frozen_features"][0]["images"] == 0
    a, b = (
        [json.loads(line)["loss"] for line in (tmp_path / d / "losses.jsonl").read_text().splitlines()]
        for d in ("kept", "every")
    )
    assert len(a) == kept["steps"] and a == pytest.approx(b, rel=1e-4, abs=1e-5)
