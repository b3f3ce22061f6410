"""The `objects` split's labels (the world's ImageNet): what a labeller tags in an image, per group.
Its own module, so that scoring a vision classifier does not depend on how scenes are drawn."""

from __future__ import annotations

from typing import Any

from blip_core.config.data import OBJECT_LABEL_GROUPS, REGION_GROUP, RELATION_GROUP
from blip_core.data.world import lexicon as lx
from blip_core.data.world.scene import GRID, Scene, SceneObject, relation_holds

REGION_ATTRIBUTES = ("shape", "color", "size")
"""What a `region` label names about its object (Visual Genome's object + attribute annotations)."""


def region_classes() -> list[str]:
    """The `region` group's class vocabulary: `<attribute>:<value>` for each attribute head."""
    values = {"shape": lx.SHAPES, "color": tuple(lx.COLORS), "size": lx.SIZES}
    return [f"{a}:{v}" for a in REGION_ATTRIBUTES for v in values[a]]


def scene_regions(scene: Scene) -> list[dict[str, Any]]:
    """One region per object: its box (the object's grid cell, as fractions of the image side:
    x0, y0, x1, y1) and its shape, colour and size."""
    return [
        {"box": [o.col / GRID, o.row / GRID, (o.col + 1) / GRID, (o.row + 1) / GRID],
         "shape": o.shape, "color": o.color, "size": o.size}
        for o in scene.objects
    ]  # fmt: skip


def subject_relations(obj: SceneObject, scene: Scene) -> list[str]:
    """The relations `obj` holds to at least one other object of the scene (Visual Genome's
    relationship triples, subject side): "left_of" when something lies to its right."""
    return [r for r in lx.RELATIONS if any(relation_holds(obj, b, r) for b in scene.objects if b is not obj)]


def object_labels(scene: Scene, groups: tuple[str, ...] | list[str] = OBJECT_LABEL_GROUPS) -> dict[str, list]:
    """The labels of an `objects` image, per group of `groups` (`world.object_labels` chooses them):
    which shapes and which colours it shows, each object's box with its attributes (`region`), its
    background, and its objects as attribute-object classes ("large red circle").

    Why this design (decided from what ImageNet and Visual Genome are to BLIP, before measuring any
    effect):
    - scenes: drawn like the clean splits' (1-4 objects, both sizes, every background), because
      ImageNet photos come from the same visual world as COCO's, not isolated studio objects; no
      held-out (colour, shape) combination, so `novel` stays zero-shot;
    - labels: image-level classes a labeller would tag, multi-label per group: the object categories
      (shapes) and their colours, as ImageNet's; optionally the background texture, which real
      backbones know (ImageNet CNNs are texture-biased; DTD and Places name textures and scenes);
    - region: each object's box with its shape, colour and size, the object and attribute
      annotations of Visual Genome that the detectors of BLIP's predecessors (bottom-up attention:
      UNITER, OSCAR, VinVL) were trained on. Image-level labels never say which colour belongs to
      which shape; a box does. The box is the object's grid cell (coarser than a labeller's tight
      box). No counts, relations or text: a detector's labels say "a goldfish here, a rock there",
      not "two goldfish left of a rock". The same attributes as image-level classes ("large red
      circle", `object`) are not learned in make run's budget (README recipe table);
    - relation: for each box, the relations its object is the subject of with some other object
      (Visual Genome's relationship triples, kept per subject: "left of something"), so that a
      box's features say what a caption about it may go on to relate;
    - size: `world.num_objects`, ~1,000+ images per class (ImageNet-1k has ~1,300): ~2.2 objects
      an image over 8 shapes and 10 colours needs ~6,000 images; clean, like ImageNet's labels.
    """
    labels = {
        "shape": sorted({o.shape for o in scene.objects}, key=lx.SHAPES.index),
        "color": sorted({o.color for o in scene.objects}, key=list(lx.COLORS).index),
        "background": [scene.background],
        "object": sorted({f"{o.size} {o.color} {o.shape}" for o in scene.objects}),
    }
    if REGION_GROUP in groups:
        labels[REGION_GROUP] = scene_regions(scene)
    if RELATION_GROUP in groups:  # one list per region box, in the same order
        labels[RELATION_GROUP] = [subject_relations(o, scene) for o in scene.objects]
    return {group: labels[group] for group in groups}
