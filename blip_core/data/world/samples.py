"""One sample of an image split of the embedded world (`make_sample`: jpeg, captions or labels,
ground truth), and the `objects` split's labels.

The world is a deterministic generator of images, human captions and noisy web alt-text whose
noise is known.

Why it exists: BLIP's CapFilt only means something with noisy web data to clean and clean human
captions to learn a captioner and filter from; no such data can be downloaded here. The world mirrors
the properties the paper relies on:

- `coco_train`: clean images with 5 human-style captions each (COCO-like);
- `web`: a pool several times larger with one alt-text each, ~40% of it noise of a labelled type
  (mismatched, attribute-corrupted, spam, uninformative), the rest clean-but-terse;
- `val` / `test`: Karpathy-style held-out clean splits with 5 captions each;
- `novel`: scenes with (colour, shape) combinations that never occur in the clean splits but do
  occur on the web (NoCaps-like), so they can only be learned from web data;
- `vqa_*`, `nlvr_*`, `video_*`: items of the paper's other downstream tasks (VQA, NLVR2,
  text-video) built from these scenes with exact answers; see `blip_core.data.world.tasks`;
- `objects`: label-only object recognition (ImageNet-like: an image and its class labels, no
  captions), from which `pretrain_vision` trains the vision tower that both BLIP pre-trainings
  start from, as BLIP starts its ViT from ImageNet (DeiT) weights. See `object_labels`.

Everything derives from (seed, split, index) through string-seeded `random.Random`, so any sample
can be regenerated alone (the mismatched noise uses this to copy another web image's alt-text) and
shards are byte-identical across runs and across numbers of worker processes.
"""

from __future__ import annotations

from typing import Any

from blip_core.config.data import WorldConfig
from blip_core.data.world import lexicon as lx
from blip_core.data.world.captions import human_captions
from blip_core.data.world.labels import object_labels, region_classes
from blip_core.data.world.noise import web_caption
from blip_core.data.world.render import encode_jpeg, held_out_combos, render_scene, rng_for, sample_scene, seen_combos

# ------------------------------------------------------------------------------------------------
# the objects split: the world's ImageNet


def label_classes(cfg: WorldConfig) -> dict[str, list[str]]:
    """The `objects` split's class vocabulary: group -> class names, for the groups `cfg.object_labels`
    names. `object` classes are "<size> <colour> <shape>" of the seen (colour, shape) combinations
    only, so `novel` stays zero-shot."""
    vocab = {
        "shape": list(lx.SHAPES),
        "color": list(lx.COLORS),
        "background": list(lx.BACKGROUNDS),
        "object": [f"{size} {c} {s}" for c, s in seen_combos(cfg) for size in lx.SIZES],
        "region": region_classes(),
        "relation": list(lx.RELATIONS),
    }
    return {group: vocab[group] for group in cfg.object_labels}


# ------------------------------------------------------------------------------------------------
# samples (blip_core.data.world.generate writes them into shards)


def make_sample(cfg: WorldConfig, split: str, index: int) -> dict[str, Any]:
    """Everything about one sample: key, jpeg bytes, captions, source and ground-truth metadata."""
    scene = sample_scene(cfg, split, index)
    img = render_scene(scene, rng_for(cfg, split, index, "render"), cfg.image_size)
    key = f"{split}-{index:07d}"
    gt: dict[str, Any] = {"scene": scene.to_dict()}
    held = set(held_out_combos(cfg))
    gt["novel_objects"] = [i for i, o in enumerate(scene.objects) if (o.color, o.shape) in held]
    if split == "objects":  # label-only: its labels are training data (unlike gt)
        meta = {"image_id": key, "split": split, "labels": object_labels(scene, cfg.object_labels), "gt": gt}
        return {"key": key, "jpeg": encode_jpeg(img, cfg.jpeg_quality), "size": img.size, "captions": [],
                "source": "labels", "meta": meta}  # fmt: skip
    if split == "web":
        text, noise_type, detail = web_caption(cfg, index, scene)
        captions, source = [text], "web"
        gt |= {"noise_type": noise_type, "noise_detail": detail}
    else:
        captions = human_captions(scene, rng_for(cfg, split, index, "caption"), cfg.captions_per_image)
        source = "human"
    return {
        "key": key,
        "jpeg": encode_jpeg(img, cfg.jpeg_quality),
        "size": img.size,
        "captions": captions,
        "source": source,
        # gt is for evaluation only: training code never reads it
        "meta": {"image_id": key, "split": split, "gt": gt},
    }
