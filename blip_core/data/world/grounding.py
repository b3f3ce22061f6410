"""Caption grounding checker: parse a caption into objects/attributes/relations and score it against
the scene that was rendered.

The world generator writes captions from structured mentions; this module parses free text back
into the same structure with the shared lexicon, so it also works on generated (model) captions.

Reading (as a person reads a caption):
- a specific noun phrase (a shape, or a colour/size on a generic noun) claims objects: its count,
  else one ("a", bare singular), and a bare plural ("red circles") two or more. All claims of a
  caption go to DISTINCT scene objects that match their phrase, by one bipartite matching, so "a
  black circle and a black circle" needs two black circles;
- an explicit numeral ("one", "two", "3") is exact: the scene has that many matching objects; "a"
  only says there is one;
- a generic total ("three shapes") is the exact number of all scene objects and claims none;
- a relation holds if some matching of the claims puts two distinct objects that satisfy it on its
  two phrases (all relations of the caption at once).

Scoring (per caption):
- every mentioned attribute (shape, colour, size, exact count, relation, background) is checked
  against the scene, plus one false count for each phrase whose claims do not fit the objects left
  by the phrases before it; precision = true attributes / mentioned attributes;
- object recall = scene objects the matching gives to a fully-true noun phrase / scene objects;
- attribute recall = (shape, colour, size) attributes of those objects that their phrase names
  / (3 * scene objects);
- a caption is *true* when it mentions at least one attribute and all of them are true;
- by attribute (`GroundingResult.by_attribute`: mentioned and true mentions of colour, shape, size,
  count, relation, background), each mention is judged on its own, so the tally says which
  attribute fails: a shape is true if the scene has one; a colour if an object of the named shape
  has it (any object, when no object has that shape: one wrong shape is not also a wrong colour); a
  size likewise among the objects of that shape and colour; counts, relations and the background as
  above (a relation whose phrases are not both true and placed: any two distinct objects matching
  them).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from blip_core.data.world.scene import (  # noqa: F401  (the checker's vocabulary, imported from here too)
    Mentions,
    NounPhrase,
    Scene,
    SceneObject,
    parse_caption,
    relation_holds,
    tokenize,
    true_relations,
)

ATTRIBUTES = ("color", "shape", "size", "count", "relation", "background")
"""The attribute kinds a caption can mention (the keys of `GroundingResult.by_attribute`)."""


@dataclass(slots=True)
class GroundingResult:
    num_attributes: int
    num_true: int
    object_recall: float
    attribute_recall: float
    errors: list[str]
    by_attribute: dict[str, list[int]] = field(default_factory=lambda: {a: [0, 0] for a in ATTRIBUTES})
    """attribute -> [mentions, true mentions], each mention judged on its own (module docstring)."""

    @property
    def precision(self) -> float:
        return self.num_true / self.num_attributes if self.num_attributes else 0.0

    @property
    def is_true(self) -> bool:
        return self.num_attributes > 0 and self.num_true == self.num_attributes


# ------------------------------------------------------------------------------------------------
# scoring


def _matches(o: SceneObject, np_: NounPhrase) -> bool:
    return (
        (np_.shape is None or o.shape == np_.shape)
        and (np_.color is None or o.color == np_.color)
        and (np_.size is None or o.size == np_.size)
    )


def _is_total(np_: NounPhrase) -> bool:
    """A generic noun with nothing else ("three shapes"): a count of all objects, claims none."""
    return np_.shape is None and np_.color is None and np_.size is None


def _is_exact(np_: NounPhrase) -> bool:
    return np_.count is not None and (np_.count >= 2 or np_.exact)


def _claims(np_: NounPhrase) -> int:
    """How many distinct objects a specific phrase claims (a bare plural: at least two)."""
    if np_.count is not None:
        return np_.count
    return 2 if np_.plural else 1


def _describe(np_: NounPhrase) -> str:
    return " ".join(w for w in (np_.size, np_.color, np_.shape or "shape") if w)


def _check_phrase(np_: NounPhrase, scene: Scene) -> tuple[int, int, list[str]]:
    """The phrase on its own: (attributes mentioned, attributes true, error strings)."""
    objs = scene.objects
    mentioned = true = 0
    errors: list[str] = []
    if np_.shape is not None:
        mentioned += 1
        if any(o.shape == np_.shape for o in objs):
            true += 1
        else:
            errors.append(f"no {np_.shape}")
    base = [o for o in objs if np_.shape is None or o.shape == np_.shape]
    if np_.color is not None:
        mentioned += 1
        if any(o.color == np_.color for o in base):
            true += 1
            base = [o for o in base if o.color == np_.color]
        else:
            errors.append(f"no {np_.color} {np_.shape or 'shape'}")
            base = []
    if np_.size is not None:
        mentioned += 1
        if any(o.size == np_.size for o in base):
            true += 1
        else:
            errors.append(f"no {np_.size} {np_.color or ''} {np_.shape or 'shape'}".replace("  ", " "))
    # a numeral is exact, COCO-style ("two dogs" is false with three dogs, "one dog" with two);
    # "a red circle" claims existence only (covered by shape/colour/size and the matching)
    if _is_exact(np_):
        mentioned += 1
        n = sum(1 for o in objs if _matches(o, np_))
        if n == np_.count:
            true += 1
        else:
            errors.append(f"count {np_.count} but {n} match")
    return mentioned, true, errors


def _tally_phrase(np_: NounPhrase, scene: Scene, tally: dict[str, list[int]]) -> None:
    """Per-attribute judgement of one noun phrase (see the module docstring)."""

    def add(attr: str, ok: bool) -> None:
        tally[attr][0] += 1
        tally[attr][1] += int(ok)

    objs = scene.objects
    if np_.shape is not None:
        add("shape", any(o.shape == np_.shape for o in objs))
    pool = [o for o in objs if np_.shape is None or o.shape == np_.shape] or objs
    if np_.color is not None:
        add("color", any(o.color == np_.color for o in pool))
        pool = [o for o in pool if o.color == np_.color] or pool
    if np_.size is not None:
        add("size", any(o.size == np_.size for o in pool))
    if _is_exact(np_):
        add("count", sum(1 for o in objs if _matches(o, np_)) == np_.count)


_MISS = 1.0e6
"""Matching cost of a slot on an object that does not fit it (a fit has total cost 0)."""


class _Matcher:
    """Claims of phrases on distinct objects: one slot row per claimed object, one column per
    object, solved by `linear_sum_assignment`; `forced` pins objects to phrases (relations)."""

    def __init__(self, matches: list[set[int]], claims: list[int], num_objects: int):
        self.matches, self.claims, self.num_objects = matches, claims, num_objects
        self._cache: dict[tuple, list[tuple[int, int]] | None] = {}

    def assign(self, phrases: list[int], forced: dict[int, set[int]] | None = None) -> list[tuple[int, int]] | None:
        """(phrase, object) per claimed slot, or None when the claims do not fit distinct objects."""
        forced = forced or {}
        key = (tuple(phrases), tuple(sorted((p, tuple(sorted(f))) for p, f in forced.items())))
        if key not in self._cache:
            self._cache[key] = self._solve(phrases, forced)
        return self._cache[key]

    def _solve(self, phrases: list[int], forced: dict[int, set[int]]) -> list[tuple[int, int]] | None:
        slots: list[tuple[int, set[int]]] = []
        for p in phrases:
            pinned = forced.get(p, set())
            if len(pinned) > self.claims[p]:
                return None
            slots += [(p, {o}) for o in sorted(pinned)]
            slots += [(p, self.matches[p])] * (self.claims[p] - len(pinned))
        if not slots:
            return []
        if len(slots) > self.num_objects:
            return None
        cost = np.full((len(slots), self.num_objects), _MISS)
        for r, (_, allowed) in enumerate(slots):
            cost[r, sorted(allowed)] = 0.0
        rows, cols = linear_sum_assignment(cost)
        if cost[rows, cols].sum() > 0:
            return None
        return [(slots[r][0], int(c)) for r, c in zip(rows, cols)]


def _relation_pairs(objs: list[SceneObject], a_set: set[int], b_set: set[int], rel: str) -> list[tuple[int, int]]:
    # one object is never in a relation with itself
    return [(a, b) for a in sorted(a_set) for b in sorted(b_set) if a != b and relation_holds(objs[a], objs[b], rel)]


def _joint_relations(
    matcher: _Matcher, placed: list[int], rels: list[tuple[int, int, list[tuple[int, int]]]]
) -> list[tuple[int, int]] | None:
    """A matching of the placed phrases in which every relation has a witness pair, or None.
    Depth-first over the relations' candidate pairs, pruned by the matching at each step."""

    def search(k: int, forced: dict[int, set[int]]) -> list[tuple[int, int]] | None:
        fit = matcher.assign(placed, forced)
        if fit is None or k == len(rels):
            return fit
        i, j, pairs = rels[k]
        for a, b in pairs:
            nxt = {p: set(f) for p, f in forced.items()}
            nxt.setdefault(i, set()).add(a)
            nxt.setdefault(j, set()).add(b)
            found = search(k + 1, nxt)
            if found is not None:
                return found
        return None

    return search(0, {})


def _fit_error(phrases: list[NounPhrase], matcher: _Matcher, placed: list[int], p: int) -> str:
    """Why phrase `p` does not fit after `placed`: the phrases (with `p`) that claim more objects
    than match any of them (Hall's condition), e.g. "claims 2 distinct black triangle objects,
    scene has 1"."""
    m = matcher.matches
    # every subset of the placed phrases: few in a caption; a long one keeps the 10 that overlap `p`
    others = placed if len(placed) <= 10 else [q for q in placed if m[q] & m[p]][:10]
    worst: tuple[int, list[int], set[int]] = (0, [p], m[p])
    for r in range(len(others) + 1):
        for group in itertools.combinations(others, r):
            members = [*group, p]
            union = set().union(*(m[q] for q in members))
            excess = sum(matcher.claims[q] for q in members) - len(union)
            if excess > worst[0]:
                worst = (excess, members, union)
    excess, members, union = worst
    if not excess:  # only when the subsets were cut short above
        return f"count: {_describe(phrases[p])} does not fit distinct objects"
    # name the group by its plainest phrase that matches all of it ("black triangle", not "big ...")
    widest = sorted((q for q in members if m[q] == union), key=lambda q: len(_describe(phrases[q]).split()))
    what = _describe(phrases[widest[0]]) if widest else " or ".join(_describe(phrases[q]) for q in members)
    return f"count: claims {len(union) + excess} distinct {what} objects, scene has {len(union)}"


def ground_caption(caption: str | Mentions, scene: Scene) -> GroundingResult:
    """Score a caption (text or parsed mentions) against a scene."""
    m = parse_caption(caption) if isinstance(caption, str) else caption
    objs = scene.objects
    mentioned = true = 0
    errors: list[str] = []
    tally: dict[str, list[int]] = {a: [0, 0] for a in ATTRIBUTES}
    phrase_ok: list[bool] = []
    for np_ in m.phrases:
        _tally_phrase(np_, scene, tally)
        n_m, n_t, errs = _check_phrase(np_, scene)
        mentioned += n_m
        true += n_t
        errors += errs
        phrase_ok.append(n_m == n_t)
    # claims of the true specific phrases, placed in caption order on distinct objects: a phrase
    # that no longer fits is one false count (the phrase that cannot be placed)
    matches = [{i for i, o in enumerate(objs) if _matches(o, np_)} for np_ in m.phrases]
    matcher = _Matcher(matches, [_claims(np_) for np_ in m.phrases], len(objs))
    placed: list[int] = []
    for p, np_ in enumerate(m.phrases):
        if _is_total(np_) or not phrase_ok[p]:
            continue
        if matcher.assign(placed + [p]) is not None:
            placed.append(p)
            continue
        mentioned += 1
        tally["count"][0] += 1
        errors.append(_fit_error(m.phrases, matcher, placed, p))
    assignment = matcher.assign(placed) or []
    # relations: between placed phrases, all at once in one matching (accepted in caption order);
    # otherwise judged on their own, on any two distinct matching objects
    everything = set(range(len(objs)))
    accepted: list[tuple[int, int, list[tuple[int, int]]]] = []
    for a_idx, rel, b_idx in m.relations:
        sets = [everything if _is_total(m.phrases[x]) else matches[x] for x in (a_idx, b_idx)]
        pairs = _relation_pairs(objs, sets[0], sets[1], rel)
        if a_idx in placed and b_idx in placed:
            witness = _joint_relations(matcher, placed, accepted + [(a_idx, b_idx, pairs)])
            holds = witness is not None
            if holds:
                accepted.append((a_idx, b_idx, pairs))
                assignment = witness
        else:
            holds = bool(pairs)
        mentioned += 1
        tally["relation"][0] += 1
        if holds:
            true += 1
            tally["relation"][1] += 1
        else:
            errors.append(f"relation {rel} false")
    if m.background is not None:
        mentioned += 1
        tally["background"][0] += 1
        if m.background == scene.background:
            true += 1
            tally["background"][1] += 1
        else:
            errors.append(f"background is {scene.background}, not {m.background}")
    covered: dict[int, set[str]] = {}
    for p, o in assignment:
        np_ = m.phrases[p]
        covered.setdefault(o, set()).update(a for a in ("shape", "color", "size") if getattr(np_, a))
    n_obj = max(1, len(objs))
    object_recall = len(covered) / n_obj
    attribute_recall = sum(len(a) for a in covered.values()) / (3 * n_obj)
    return GroundingResult(mentioned, true, object_recall, attribute_recall, errors, tally)


# ------------------------------------------------------------------------------------------------
# repetition diagnostic: does a caption name one colour-shape pair twice, does a scene hold one?


def names_pair_twice(caption: str | Mentions) -> bool:
    """Two or more noun phrases, two of which name the same (colour, shape) pair (both given)."""
    m = parse_caption(caption) if isinstance(caption, str) else caption
    pairs = [(p.color, p.shape) for p in m.phrases if p.color is not None and p.shape is not None]
    return len(m.phrases) >= 2 and len(set(pairs)) < len(pairs)


def scene_has_pair_twice(scene: Scene) -> bool:
    """Two scene objects share colour and shape."""
    pairs = [(o.color, o.shape) for o in scene.objects]
    return len(set(pairs)) < len(pairs)
