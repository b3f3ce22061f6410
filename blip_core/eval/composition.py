"""Does a model know which colour belongs to which object, which way a relation points, how many?
Teacher-forced, not generated: a true caption against the same words in a false order.

- Binding: for each scene of two objects that differ in colour and in shape, "a <c1> <s1> and a
  <c2> <s2>" against the colours traded ("a <c2> <s1> and a <c1> <s2>"), as NegCLIP's and
  ARO's word-order probes (Yuksekgonul et al. 2023).
- Direction: for every ordered pair (A, B) of objects whose colour-shape is unique in the scene and
  which stand in exactly one direction (left of, right of, above, below; a diagonal pair satisfies
  two and is left out), "a <A> <relation> a <B>" against the relation reversed ("left of" <->
  "right of", "above" <-> "below"), as What'sUp (Kamath et al. 2023).
- Count: for each colour-shape group of one to three objects, "<n> <colour> <shape>" against the
  count off by one ("one red circle" vs "two red circles"; a group of two against one and three),
  as CountBench's hard negatives (Paiss et al. 2023, "Teaching CLIP to count to ten"). Groups of
  one outnumber the rest several times, so as many of them as there are cases of two or more are
  used, and `count_acc` is the mean of `count_acc_single` and `count_acc_plural`: a model that
  always says "one" scores 0.5.

The captioner scores a caption by its log-likelihood, the filter by ITM p(match); accuracy is the
share of cases where the true caption wins (chance 0.5): `binding_acc`, `relation_direction_acc`
(by axis too) and `count_acc` for a captioner, the same prefixed `itm_` for a filter. Generated captions'
precision mixes these with the prior over words and with what is described; this isolates them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from tqdm import tqdm

from blip_core.data.loader import EvalSplit
from blip_core.data.world import lexicon as lx
from blip_core.data.world.scene import Scene, relation_holds

DIRECTIONS = ("left_of", "right_of", "above", "below")
HORIZONTAL = ("left_of", "right_of")
Scorer = Callable[[torch.Tensor, list[str]], torch.Tensor]
"""(images (b, 3, H, W), 2b captions: each image's true then false one) -> (2b,) scores in that
order, higher = more likely true; the tower runs once per image."""


def _phrase(o) -> str:
    return f"a {o.color} {lx.SHAPE_SYNONYMS[o.shape][0]}"


def direction_pairs(scenes: list[dict | None]) -> list[tuple[int, str, str, str]]:
    """(image index, caption, reversed caption, true relation) for every pair the probe can judge."""
    out = []
    for idx, raw in enumerate(scenes):
        if not raw:
            continue
        objs = Scene.from_dict(raw).objects
        kinds = [(o.color, o.shape) for o in objs]
        for a in objs:
            for b in objs:
                if a is b or kinds.count((a.color, a.shape)) > 1 or kinds.count((b.color, b.shape)) > 1:
                    continue
                holds = [r for r in DIRECTIONS if relation_holds(a, b, r)]
                if len(holds) != 1:
                    continue
                r = holds[0]
                pa, pb = _phrase(a), _phrase(b)
                true, reverse = lx.RELATION_PHRASES[r][0], lx.RELATION_PHRASES[lx.INVERSE_RELATION[r]][0]
                out.append((idx, f"{pa} {true} {pb}", f"{pa} {reverse} {pb}", r))
    return out


def binding_pairs(scenes: list[dict | None]) -> list[tuple[int, str, str]]:
    """(image index, caption, colours traded) for each scene of two objects differing in both."""
    out = []
    for idx, raw in enumerate(scenes):
        if not raw or len(raw["objects"]) != 2:
            continue
        a, b = Scene.from_dict(raw).objects
        if a.color == b.color or a.shape == b.shape:
            continue
        traded = _phrase(dataclasses.replace(a, color=b.color)), _phrase(dataclasses.replace(b, color=a.color))
        out.append((idx, f"{_phrase(a)} and {_phrase(b)}", f"{traded[0]} and {traded[1]}"))
    return out


COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}


def _group(n: int, color: str, shape: str) -> str:
    noun = lx.SHAPE_SYNONYMS[shape][0]
    return f"{COUNT_WORDS[n]} {color} {noun if n == 1 else lx.plural(noun)}"


def count_pairs(scenes: list[dict | None]) -> list[tuple[int, str, str, int]]:
    """(image index, true count caption, count off by one, true count): every colour-shape group of
    two or three objects, against one fewer and one more, then as many groups of one (against two)."""
    plural, single = [], []
    for idx, raw in enumerate(scenes):
        if not raw:
            continue
        groups: dict[tuple[str, str], int] = {}
        for o in Scene.from_dict(raw).objects:
            groups[(o.color, o.shape)] = groups.get((o.color, o.shape), 0) + 1
        for (color, shape), n in groups.items():
            if n == 1:
                single.append((idx, _group(1, color, shape), _group(2, color, shape), 1))
            elif n <= 3:
                plural += [(idx, _group(n, color, shape), _group(m, color, shape), n) for m in (n - 1, n + 1)]
    return plural + single[: len(plural)]


def _count_accuracy(cases, wins: list[bool], prefix: str) -> dict[str, float]:
    out: dict[str, float] = {f"{prefix}count_n": float(len(cases))}
    parts = {}
    for part, pick in (("single", lambda n: n == 1), ("plural", lambda n: n > 1)):
        picked = [w for c, w in zip(cases, wins, strict=True) if pick(c[3])]
        if picked:
            parts[part] = out[f"{prefix}count_acc_{part}"] = sum(picked) / len(picked)
    if len(parts) == 2:
        out[f"{prefix}count_acc"] = (parts["single"] + parts["plural"]) / 2
    return out


def _accuracy(pairs, wins: list[bool], prefix: str) -> dict[str, float]:
    out: dict[str, float] = {f"{prefix}relation_direction_n": float(len(pairs))}
    if not pairs:
        return out
    out[f"{prefix}relation_direction_acc"] = sum(wins) / len(wins)
    for axis, members in (("horizontal", HORIZONTAL), ("vertical", ("above", "below"))):
        picked = [w for (_, _, _, r), w in zip(pairs, wins, strict=True) if r in members]
        if picked:
            out[f"{prefix}relation_direction_acc_{axis}"] = sum(picked) / len(picked)
    return out


@torch.no_grad()
def _wins(split: EvalSplit, cases: list[tuple], batch_size: int, score: Scorer, desc: str) -> list[bool]:
    """Per case (image index, true caption, false caption, ...): does the true caption score higher?"""
    wins: list[bool] = []
    for s in tqdm(range(0, len(cases), batch_size), desc=desc, leave=False):
        chunk = cases[s : s + batch_size]
        images = split.images[[c[0] for c in chunk]]
        both = score(images, [text for c in chunk for text in c[1:3]]).view(-1, 2)  # (b, 2): true, false
        wins += (both[:, 0] > both[:, 1]).tolist()
    return wins


def _probe(split: EvalSplit, batch_size: int, score: Scorer, prefix: str) -> dict[str, float]:
    pairs = direction_pairs(split.scenes)
    out = _accuracy(pairs, _wins(split, pairs, batch_size, score, f"{prefix}relation direction"), prefix)
    bindings = binding_pairs(split.scenes)
    out[f"{prefix}binding_n"] = float(len(bindings))
    if bindings:
        wins = _wins(split, bindings, batch_size, score, f"{prefix}binding")
        out[f"{prefix}binding_acc"] = sum(wins) / len(wins)
    counts = count_pairs(split.scenes)
    return out | _count_accuracy(counts, _wins(split, counts, batch_size, score, f"{prefix}count"), prefix)


def caption_log_likelihood(
    captioner,
    images: torch.Tensor | None,
    texts: list[str],
    processor,
    device,
    *,
    per_image: int = 1,
    image_embeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B * per_image,) teacher-forced log-likelihood of each caption after the captioner's prompt;
    image b's captions are rows b * per_image ... (b + 1) * per_image - 1, its tower run once (or
    its output given as `image_embeds`, (B, N, Dv))."""
    ids, mask = (t.to(device) for t in processor(texts, prompt=True))
    emb = captioner.image_embeds(images.to(device)) if image_embeds is None else image_embeds.to(device)
    emb = emb.repeat_interleave(per_image, dim=0)  # (B * R, N, Dv)
    logits = captioner(None, ids, mask, prompt_length=processor.prompt_length, image_embeds=emb)["lm_logits"]
    target = ids.clone()
    target[:, 0] = captioner.cfg.text.bos_token_id
    logp = logits[:, :-1].float().log_softmax(-1).gather(-1, target[:, 1:, None])[..., 0]  # (B, L-1)
    keep = mask[:, 1:].clone()
    keep[:, : processor.prompt_length - 1] = 0  # the prompt is given, not scored
    return (logp * keep).sum(1).cpu()


def captioner_composition(captioner, split: EvalSplit, processor, batch_size: int, device: torch.device) -> dict:
    """Teacher-forced: the true caption's log-likelihood (after the prompt) against the false one's."""
    captioner.eval()

    def score(images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        return caption_log_likelihood(captioner, images, texts, processor, device, per_image=2)

    return _probe(split, batch_size, score, "")


def itm_composition(model, split: EvalSplit, processor, batch_size: int, device: torch.device) -> dict[str, Any]:
    """ITM p(match) of the true caption against the false one's (metrics named `itm_*`)."""
    model.eval()

    def score(images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        ids, mask = (t.to(device) for t in processor(texts))
        return model.score(model.image_embeds(images.to(device)), ids, mask)["itm_prob"].cpu()  # 2 rows per image

    return _probe(split, batch_size, score, "itm_")
