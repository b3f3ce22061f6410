"""The `objects` split's labels (the world's ImageNet): what a labeller tags in an image, per group.
Its own module, so that scoring a vision classifier does not depend on how scenes are drawn."""

from __future__ import annotations

from blip_core.config.data import OBJECT_LABEL_GROUPS
from blip_core.data.world import lexicon as lx
from blip_core.data.world.scene import Scene


def object_labels(scene: Scene, groups: tuple[str, ...] | list[str] = OBJECT_LABEL_GROUPS) -> dict[str, list[str]]:
    """The class labels of an `objects` image, per group of `groups` (`world.object_labels` chooses
    them; by default shape and color): which shapes and which colours it shows, its background, and
    its objects as attribute-object classes ("large red circle").

    Why this design (decided from what ImageNet is to BLIP, before measuring any effect):
    - scenes: drawn like the clean splits' (1-4 objects, both sizes, every background), because
      ImageNet photos come from the same visual world as COCO's, not isolated studio objects; no
      held-out (colour, shape) combination, so `novel` stays zero-shot;
    - labels: image-level classes a labeller would tag, multi-label per group: the object categories
      (shapes) and their colours, as ImageNet's; optionally the background texture, which real
      backbones know (ImageNet CNNs are texture-biased; DTD and Places name textures and scenes),
      and each object's attributes bound to it, the attribute-object labels of Visual Genome that
      the detectors of BLIP's predecessors (bottom-up attention: UNITER, OSCAR, VinVL) were trained
      on. Both are off by default: the background (scored on the [CLS] token) makes the captioner
      name backgrounds right and repeat fewer objects, but its make run failed the kept-noise gate;
      the objects are not learned in make run's budget (README recipe table).
      Nothing a caption says beyond that: no counts, positions or relations, as ImageNet labels say
      "goldfish", not "two goldfish left of a rock";
    - size: `world.num_objects`, ~1,000+ images per class (ImageNet-1k has ~1,300): ~2.2 objects
      an image over 8 shapes and 10 colours needs ~6,000 images; clean, like ImageNet's labels.
    """
    labels = {
        "shape": sorted({o.shape for o in scene.objects}, key=lx.SHAPES.index),
        "color": sorted({o.color for o in scene.objects}, key=list(lx.COLORS).index),
        "background": [scene.background],
        "object": sorted({f"{o.size} {o.color} {o.shape}" for o in scene.objects}),
    }
    return {group: labels[group] for group in groups}
