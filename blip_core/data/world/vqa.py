"""VQA items of the embedded world: questions about one scene with their exact answers, and the
independent checker `vqa_answer`.

`vqa_train` (coco_train images only), `vqa_test` and `vqa_novel` ask about colour, shape, count,
relation, size, background and yes/no existence; each question has exactly one answer in its scene
(a referent that is absent or ambiguous is never asked about). Count answers are words, as in VQA v2.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from random import Random

from blip_core.config.data import WorldConfig
from blip_core.data.task_data import TaskItem
from blip_core.data.world import lexicon as lx
from blip_core.data.world.items import (
    NUMBER_WORDS,
    REL_RE,
    TASK_SPLITS,
    Combo,
    SplitImages,
    allowed_combos,
    matching,
    normalize,
    np_of,
    np_phrase,
    rel_phrase,
    relation_of,
)
from blip_core.data.world.render import rng_for
from blip_core.data.world.scene import Scene, relation_holds

VQA_TYPES = ("color", "shape", "count", "relation", "yesno", "size", "background")


def _vqa_candidates(kind: str, scene: Scene, rng: Random, allowed: list[Combo]) -> list[tuple[str, str]]:
    """(question, answer) pairs of one type whose answer is unique in `scene`."""
    objs = scene.objects
    combos = Counter((o.color, o.shape) for o in objs)
    shapes = Counter(o.shape for o in objs)
    colors = Counter(o.color for o in objs)
    out: list[tuple[str, str]] = []
    if kind == "color":
        for o in objs:
            if shapes[o.shape] == 1:
                out.append((f"what color is the {np_phrase(rng, o.shape)}?", o.color))
            elif sum(p.shape == o.shape and p.size == o.size for p in objs) == 1:
                out.append((f"what color is the {np_phrase(rng, o.shape, size=o.size)}?", o.color))
    elif kind == "shape":
        for o in objs:
            if colors[o.color] == 1:
                out.append((f"what shape is the {np_phrase(rng, None, o.color)}?", o.shape))
            elif sum(p.color == o.color and p.size == o.size for p in objs) == 1:
                out.append((f"what shape is the {np_phrase(rng, None, o.color, o.size)}?", o.shape))
    elif kind == "size":
        for o in objs:
            if combos[(o.color, o.shape)] == 1:
                out.append((f"what size is the {np_phrase(rng, o.shape, o.color)}?", o.size))
    elif kind == "count":
        out.append((f"how many {np_phrase(rng, None, plural=True)} are there?", NUMBER_WORDS[len(objs)]))
        for s, n in shapes.items():
            out.append((f"how many {np_phrase(rng, s, plural=True)} are there?", NUMBER_WORDS[n]))
        for (c, s), n in combos.items():
            out.append((f"how many {np_phrase(rng, s, c, plural=True)} are there?", NUMBER_WORDS[n]))
        for c, n in colors.items():
            out.append((f"how many {np_phrase(rng, None, c, plural=True)} are there?", NUMBER_WORDS[n]))
    elif kind == "relation":
        for ref in objs:
            if combos[(ref.color, ref.shape)] != 1:
                continue
            for rel in lx.RELATIONS:
                hits = [o for o in objs if o is not ref and relation_holds(o, ref, rel)]
                if len(hits) == 1:
                    q = f"what is {rel_phrase(rng, rel)} the {np_phrase(rng, ref.shape, ref.color)}?"
                    out.append((q, f"{hits[0].color} {hits[0].shape}"))
    elif kind == "yesno":
        if rng.random() < 0.5:
            out = [(f"is there {np_phrase(rng, s, c, article='a')}?", "yes") for (c, s) in combos]
        else:
            absent = [cs for cs in allowed if cs not in combos]
            # plausible: the colour or the shape is in the scene, only the binding is wrong
            near = [(c, s) for c, s in absent if c in colors or s in shapes]
            out = [(f"is there {np_phrase(rng, s, c, article='a')}?", "no") for c, s in (near or absent)]
    elif kind == "background":
        q = rng.choice(("what is the background pattern?", "what kind of background is it?"))
        out.append((q, scene.background))
    else:
        raise ValueError(f"unknown VQA question type {kind!r}")
    return out


def vqa_questions(scene: Scene, rng: Random, n: int, allowed: list[Combo]) -> list[dict[str, str]]:
    """`n` distinct questions about `scene` ({question, answer, type}); types balanced as far as the
    scene allows (a shuffled round over `VQA_TYPES`, skipping types with no valid question)."""
    out: list[dict[str, str]] = []
    asked: set[str] = set()
    exhausted: set[str] = set()
    while len(out) < n and len(exhausted) < len(VQA_TYPES):
        order = list(VQA_TYPES)
        rng.shuffle(order)
        for kind in order:
            if len(out) == n:
                break
            if kind in exhausted:
                continue
            cands = [c for c in _vqa_candidates(kind, scene, rng, allowed) if c[0] not in asked]
            if not cands:
                exhausted.add(kind)
                continue
            question, answer = rng.choice(cands)
            asked.add(question)
            out.append({"question": question, "answer": answer, "type": kind})
    return out


def vqa_items(cfg: WorldConfig, split: str) -> Iterator[TaskItem]:
    """`cfg.vqa_per_image` questions on every image of the split's image split."""
    image_split = TASK_SPLITS[split][1]
    images = SplitImages(cfg, image_split)
    allowed = allowed_combos(cfg, image_split)
    for i in range(cfg.split_sizes()[image_split]):
        jpeg, scene = images.get(i)
        for q, qa in enumerate(vqa_questions(scene, rng_for(cfg, split, i, "questions"), cfg.vqa_per_image, allowed)):
            fields = {"image_id": images.key(i), "question": qa["question"], "answers": [qa["answer"]],
                      "answer": qa["answer"], "type": qa["type"], "scene": scene.to_dict()}  # fmt: skip
            yield TaskItem(f"{split}-{i:07d}-q{q}", [jpeg], fields)


def vqa_answer(question: str, scene: Scene) -> str | None:
    """The exact answer of `question` in `scene`; None when the question is ill-posed there (its
    referent is absent or ambiguous). Raises ValueError for text outside the generated templates."""
    q = normalize(question)
    if q in ("what is the background pattern", "what kind of background is it"):
        return scene.background
    if m := re.fullmatch(r"what colou?r is the (.+)", q):
        hits = matching(scene, np_of(m[1]))
        return hits[0].color if len(hits) == 1 else None
    if m := re.fullmatch(r"what shape is the (.+)", q):
        hits = matching(scene, np_of(m[1]))
        return hits[0].shape if len(hits) == 1 else None
    if m := re.fullmatch(r"what size is the (.+)", q):
        hits = matching(scene, np_of(m[1]))
        return hits[0].size if len(hits) == 1 else None
    if m := re.fullmatch(r"how many (.+) are there", q):
        n = len(matching(scene, np_of(m[1])))
        return NUMBER_WORDS.get(n, str(n))
    if m := re.fullmatch(r"is there (?:a|an) (.+)", q):
        return "yes" if matching(scene, np_of(m[1])) else "no"
    if m := re.fullmatch(rf"what is ({REL_RE}) the (.+)", q):
        rel, refs = relation_of(m[1]), matching(scene, np_of(m[2]))
        if len(refs) != 1:
            return None
        hits = [o for o in scene.objects if o is not refs[0] and relation_holds(o, refs[0], rel)]
        return f"{hits[0].color} {hits[0].shape}" if len(hits) == 1 else None
    raise ValueError(f"unparseable VQA question {question!r}")
