"""Attribute probes on frozen features: which tower knows what.

A linear probe (scikit-learn logistic regression, one-vs-rest) is fitted on frozen features of one
split and scored on another. Labels come from the world's ground truth (`gt` scenes) or from
parsing the caption text with the grounding checker, so this is evaluation only: nothing here
feeds training.

- image tower: multi-label "which colours / shapes / (colour, shape) pairs are in the image", from
  the vision encoder's tokens (the [CLS] token and the mean of the patch tokens, concatenated);
- text tower: "which colours / shapes does the caption mention", from the unimodal text
  encoder's [CLS] state (the input of the ITC projection).

Reported per attribute group: micro F1 and the exact-set accuracy (every label of the image right).
Chance for the exact set is tiny; a tower that knows nothing scores the label prior (F1 ~0.2-0.4).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from blip_core.config.data import OBJECT_LABEL_GROUPS, REGION_GROUP, RELATION_GROUP, region_attributes
from blip_core.data.loader import EvalSplit
from blip_core.data.world import lexicon as lx
from blip_core.data.world.grounding import parse_caption
from blip_core.data.world.labels import object_labels
from blip_core.data.world.scene import Scene

logger = logging.getLogger(__name__)

COLORS, SHAPES = tuple(lx.COLORS), lx.SHAPES


def scene_labels(scenes: Sequence[dict]) -> dict[str, np.ndarray]:
    """Multi-hot (N, K) label matrices of the colours, shapes and pairs present in each scene."""
    pairs = [(c, s) for c in COLORS for s in SHAPES]
    out = {
        "color": np.zeros((len(scenes), len(COLORS)), np.int64),
        "shape": np.zeros((len(scenes), len(SHAPES)), np.int64),
        "pair": np.zeros((len(scenes), len(pairs)), np.int64),
    }
    for i, sc in enumerate(scenes):
        for o in sc["objects"]:
            out["color"][i, COLORS.index(o["color"])] = 1
            out["shape"][i, SHAPES.index(o["shape"])] = 1
            out["pair"][i, pairs.index((o["color"], o["shape"]))] = 1
    return out


def caption_labels(captions: Sequence[str]) -> dict[str, np.ndarray]:
    """Multi-hot (N, K) matrices of the colours and shapes each caption mentions (parsed text)."""
    out = {
        "color": np.zeros((len(captions), len(COLORS)), np.int64),
        "shape": np.zeros((len(captions), len(SHAPES)), np.int64),
    }
    for i, c in enumerate(captions):
        for np_ in parse_caption(c).phrases:
            if np_.color:
                out["color"][i, COLORS.index(np_.color)] = 1
            if np_.shape:
                out["shape"][i, SHAPES.index(np_.shape)] = 1
    return out


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> dict[str, float]:
    """One-vs-rest logistic regression on standardised features -> micro F1 and exact-set accuracy.

    Labels never seen positive (or never negative) in the training split are predicted constant.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    xtr, xte = scaler.transform(x_train), scaler.transform(x_test)
    pred = np.zeros_like(y_test)
    for k in range(y_train.shape[1]):
        col = y_train[:, k]
        if col.min() == col.max():
            pred[:, k] = col[0]
            continue
        clf = LogisticRegression(C=0.5, max_iter=2000)
        pred[:, k] = clf.fit(xtr, col).predict(xte)
    return {
        "f1": float(f1_score(y_test, pred, average="micro", zero_division=0)),
        "exact": float(np.mean((pred == y_test).all(axis=1))),
    }


@torch.no_grad()
def classifier_metrics(classifier, split: EvalSplit, *, batch_size: int = 256) -> dict[str, dict[str, float]]:
    """A vision classifier (kind `vision`) scored on a split's ground-truth scenes (evaluation only):
    per label group, micro F1 and exact-set accuracy of the predicted classes (p > 0.5)."""
    from sklearn.metrics import f1_score

    if any(s is None for s in split.scenes):
        raise ValueError("scoring a classifier needs ground-truth scenes (the embedded world's splits)")
    classifier.eval()
    preds: dict[str, list[np.ndarray]] = {}
    for s in range(0, len(split.images), batch_size):
        for group, p in classifier.predict(split.images[s : s + batch_size]).items():
            preds.setdefault(group, []).append(p.numpy())
    per_object = (REGION_GROUP, RELATION_GROUP)
    groups = [g for g in classifier.cfg.classes if g in OBJECT_LABEL_GROUPS and g not in per_object]  # the world's own
    truth = [object_labels(Scene.from_dict(sc), groups) for sc in split.scenes]  # type: ignore[arg-type]
    out = {}
    if classifier.region_head is not None:
        out |= region_metrics(classifier, split, batch_size=batch_size)
    for group in groups:
        index = {name: k for k, name in enumerate(classifier.cfg.classes[group])}
        y = np.zeros((len(truth), len(index)), np.int64)
        for i, labels in enumerate(truth):
            for name in labels[group]:
                if name in index:  # a novel scene's held-out objects have no class: never predicted
                    y[i, index[name]] = 1
        pred = np.concatenate(preds[group]).astype(np.int64)
        out[group] = {
            "f1": float(f1_score(y, pred, average="micro", zero_division=0)),
            "exact": float(np.mean((pred == y).all(axis=1))),
        }
    return out


@torch.no_grad()
def region_metrics(classifier, split: EvalSplit, *, batch_size: int = 256) -> dict[str, dict[str, float]]:
    """A classifier with region labels, read at each ground-truth object's box (evaluation only):
    per attribute, the accuracy over objects ("region_<attribute>"), and over all of an object's
    attributes at once ("region_object"); a held-out (novel) combination's attributes count too.
    With relation labels, "region_relation": micro F1 of the relations each object is the subject of,
    and the share of objects with all of them right."""
    from blip_core.data.world.labels import scene_regions, subject_relations

    scenes = [Scene.from_dict(sc) for sc in split.scenes]  # type: ignore[arg-type]
    regions = [scene_regions(sc) for sc in scenes]
    names = classifier.cfg.classes.get(RELATION_GROUP, [])
    relations = [[subject_relations(o, sc) for o in sc.objects] for sc in scenes] if names else []
    rel_pred: list[np.ndarray] = []
    rel_true: list[np.ndarray] = []
    attributes = [a for a, _ in classifier.region_groups]
    vocab = region_attributes(classifier.cfg.classes[REGION_GROUP])
    right = {a: 0 for a in attributes}
    whole, total = 0, 0
    for s in range(0, len(split.images), batch_size):
        chunk = regions[s : s + batch_size]
        most = max(1, max(len(r) for r in chunk))
        boxes = torch.full((len(chunk), most, 4), -1.0)
        for i, rs in enumerate(chunk):
            for j, r in enumerate(rs):
                boxes[i, j] = torch.tensor(r["box"])
        pred = classifier.predict_regions(split.images[s : s + batch_size], boxes)
        for i, rs in enumerate(chunk):
            for j, r in enumerate(rs):
                hits = [int(pred[a][i, j]) == vocab[a].index(r[a]) for a in attributes]
                for a, hit in zip(attributes, hits, strict=True):
                    right[a] += hit
                whole += all(hits)
                total += 1
                if names:
                    rel_pred.append(pred[RELATION_GROUP][i, j].numpy())
                    rel_true.append(np.array([n in relations[s + i][j] for n in names]))
    out = {f"region_{a}": {"accuracy": right[a] / max(1, total)} for a in attributes}
    out["region_object"] = {"accuracy": whole / max(1, total)}
    if names and rel_true:
        from sklearn.metrics import f1_score

        y, p = np.array(rel_true, dtype=np.int64), np.array(rel_pred, dtype=np.int64)
        out["region_relation"] = {
            "f1": float(f1_score(y, p, average="micro", zero_division=0)),
            "exact": float(np.mean((y == p).all(axis=1))),
        }
    return out


@torch.no_grad()
def image_features(model, images: torch.Tensor, *, batch_size: int = 128) -> np.ndarray:
    """(N, 3, S, S) -> (N, 2 * Dv): [CLS] and mean patch token of the vision encoder."""
    model.eval()
    out = []
    for s in range(0, len(images), batch_size):
        emb = model.image_embeds(images[s : s + batch_size])  # (B, N, Dv)
        out.append(torch.cat([emb[:, 0], emb[:, 1:].mean(1)], dim=-1).float())
    return torch.cat(out).numpy()


@torch.no_grad()
def text_features(model, processor, captions: Sequence[str], *, batch_size: int = 256) -> np.ndarray:
    """Captions -> (N, D) unimodal [CLS] states of the text encoder."""
    model.eval()
    out = []
    for s in range(0, len(captions), batch_size):
        ids, mask = processor(list(captions[s : s + batch_size]))
        out.append(model.text(ids, mask, mode="text")[:, 0].float())
    return torch.cat(out).numpy()


def probe_towers(model, processor, train: EvalSplit, tests: dict[str, EvalSplit]) -> dict[str, Any]:
    """Fit on `train`, score on each split of `tests`: {"image": {split: {group: {...}}}, "text": ...}.

    `model` is a retrieval/filter or pre-training model (it has both towers). Splits need scenes.
    """
    if any(s is None for s in train.scenes):
        raise ValueError("probing needs ground-truth scenes (the embedded world's splits)")
    x_img = image_features(model, train.images)
    y_img = scene_labels(train.scenes)  # type: ignore[arg-type]
    train_caps = [c for caps in train.captions for c in caps]
    x_txt = text_features(model, processor, train_caps)
    y_txt = caption_labels(train_caps)
    result: dict[str, Any] = {"image": {}, "text": {}}
    for name, split in tests.items():
        xi, yi = image_features(model, split.images), scene_labels(split.scenes)  # type: ignore[arg-type]
        result["image"][name] = {g: fit_probe(x_img, y_img[g], xi, yi[g]) for g in y_img}
        caps = [c for cs in split.captions for c in cs]
        xt, yt = text_features(model, processor, caps), caption_labels(caps)
        result["text"][name] = {g: fit_probe(x_txt, y_txt[g], xt, yt[g]) for g in y_txt}
    return result


@torch.no_grad()
def noise_auroc(model, processor, web_dir, *, image_size: int, max_images: int = 1000, batch_size: int = 128) -> dict:
    """How well a model's ITM p(match) (and ITC cosine) separates clean web captions from noisy ones.

    The world's noise labels (`gt.noise_type`) are read for scoring only. Returns AUROC overall
    (`itm`, `itc`) and per noise type against the clean captions (`itm_<type>`).
    """
    from sklearn.metrics import roc_auc_score

    from blip_core.data.reader import iter_samples
    from blip_core.data.transforms import eval_transform

    model.eval()
    images, captions, types = [], [], []
    for s in iter_samples(web_dir):
        noise = (s["meta"].get("gt") or {}).get("noise_type")
        if noise is None:
            raise ValueError(f"{web_dir} has no ground-truth noise labels (the embedded world's web split has)")
        images.append(eval_transform(s["image"], image_size))
        captions.append(s["captions"][0])
        types.append(noise)
        if len(images) >= max_images:
            break
    itm, itc = [], []
    for s in range(0, len(images), batch_size):
        ids, mask = processor(captions[s : s + batch_size])
        scores = model.score(model.image_embeds(torch.stack(images[s : s + batch_size])), ids, mask)
        itm.append(scores["itm_prob"])
        itc.append(scores["itc_cosine"])
    p_itm, p_itc = torch.cat(itm).numpy(), torch.cat(itc).numpy()
    t = np.array(types)
    clean = t == "clean"
    out = {"itm": float(roc_auc_score(clean, p_itm)), "itc": float(roc_auc_score(clean, p_itc))}
    for noise in sorted(set(types) - {"clean"}):
        keep = clean | (t == noise)
        out[f"itm_{noise}"] = float(roc_auc_score(clean[keep], p_itm[keep]))
    return out
