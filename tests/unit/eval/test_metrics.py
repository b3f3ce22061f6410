"""Evaluation metrics on hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blip_core.eval.captioning import coco_caption_metrics, grounding_metrics
from blip_core.eval.retrieval import recall_metrics


def _setup(n_img=20, caps=2):
    txt2img = np.repeat(np.arange(n_img), caps)
    img2txt = [list(np.nonzero(txt2img == i)[0]) for i in range(n_img)]
    return txt2img, img2txt


def test_perfect_retrieval_is_100():
    txt2img, img2txt = _setup()
    s = np.full((20, 40), -1.0)
    for i in range(20):
        s[i, img2txt[i]] = 1.0
    m = recall_metrics(s, s.T.copy(), txt2img, img2txt)
    assert m["tr_r1"] == m["ir_r1"] == m["r_mean"] == 100.0


def test_shuffled_retrieval_is_near_chance():
    rng = np.random.default_rng(0)
    n = 400
    txt2img, img2txt = _setup(n, 1)
    r1 = [recall_metrics(s := rng.normal(size=(n, n)), s.T.copy(), txt2img, img2txt)["ir_r1"] for _ in range(5)]
    assert abs(np.mean(r1) - 100 / n) < 0.5  # chance: 0.25%
    m = recall_metrics(rng.normal(size=(n, n)), rng.normal(size=(n, n)), txt2img, img2txt)
    assert m["ir_r10"] < 6 and m["tr_r10"] < 6  # chance: 2.5%


def test_caption_metrics_on_known_pairs():
    gts = {"a": ["a red circle above a blue star", "a red disk over a star"], "b": ["two green squares"]}
    same = coco_caption_metrics(gts, {"a": "a red circle above a blue star", "b": "two green squares"}, spice=False)
    assert same["bleu1"] > 0.99 and same["rouge_l"] > 0.99 and same["cider"] > 1.0 and same["meteor"] > 0.9
    wrong = coco_caption_metrics(gts, {"a": "photo of nothing", "b": "hello world"}, spice=False)
    assert wrong["bleu1"] < 0.05 and wrong["cider"] < 0.05
    offline = coco_caption_metrics(gts, {"a": "x", "b": "y"})  # no CoreNLP jars offline: no SPICE, a log line
    assert "spice" not in offline and all(isinstance(v, float) for v in offline.values())


def test_one_meteor_process_serves_every_call_and_a_dead_one_is_replaced():
    """METEOR's Java process takes seconds to start: one per Python process, shared by every split
    and stage; if it dies, the next call starts a fresh one and still returns the score."""
    from blip_core.eval import captioning

    gts, res = {"a": ["a red circle above a blue star"]}, {"a": "a red circle above a star"}
    first = coco_caption_metrics(gts, res, spice=False)["meteor"]
    proc = captioning._meteor().meteor_p
    assert coco_caption_metrics(gts, res, spice=False)["meteor"] == first
    assert captioning._meteor().meteor_p is proc
    proc.kill()
    proc.wait()
    assert coco_caption_metrics(gts, res, spice=False)["meteor"] == first
    assert captioning._meteor().meteor_p is not proc


def test_grounding_metrics():
    scene = {
        "background": "plain",
        "objects": [{"shape": "circle", "color": "red", "size": "small", "row": 0, "col": 0}],
    }
    m = grounding_metrics(["a small red circle", "a blue circle"], [scene, scene])
    assert m["grounded_true_rate"] == 0.5 and m["grounded_precision"] == 0.75 and m["grounded_object_recall"] == 0.5
    assert grounding_metrics(["x"], [None]) == {}


def test_grounding_metrics_repetition_rates():
    def obj(shape, color, col):
        return {"shape": shape, "color": color, "size": "small", "row": 0, "col": col}

    twice = {"background": "plain", "objects": [obj("circle", "red", 0), obj("circle", "red", 2)]}
    once = {"background": "plain", "objects": [obj("circle", "red", 0), obj("star", "blue", 2)]}
    alone = {"background": "plain", "objects": [obj("circle", "red", 0)]}
    captions = ["a red circle and a red circle", "a red circle and a blue star", "a red circle", "a red disk"]
    m = grounding_metrics(captions, [twice, once, alone, None])
    assert m["grounded_multi_phrase"] == 2 and m["grounded_repeated_pair_rate"] == 0.5
    assert m["scene_repeated_pair_rate"] == 0.5  # of the two scenes with two objects; the lone one is left out
    m = grounding_metrics(["a red circle"], [alone])
    assert m["grounded_multi_phrase"] == 0
    assert "grounded_repeated_pair_rate" not in m and "scene_repeated_pair_rate" not in m


def test_itc_similarity_takes_one_or_k_features_per_image():
    from blip_core.eval.retrieval import itc_similarity

    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(4, 8, generator=g), torch.randn(6, 8, generator=g)
    assert torch.allclose(itc_similarity(img, txt), img @ txt.T)
    assert torch.allclose(itc_similarity(img[:, None], txt), img @ txt.T)  # K = 1 is BLIP's
    queries = torch.stack([img, -img], dim=1)  # (4, 2, 8): the second query of each image mirrors the first
    assert torch.allclose(itc_similarity(queries, txt), (img @ txt.T).abs())  # the best-matching query scores


def test_rank_pairs_scores_each_candidate_pair_as_a_pass_over_every_pair_does():
    """ITM re-ranking scores a pair in both directions' top k once and pads each chunk to its own
    longest text: the scores are those of scoring every candidate pair padded to the longest text."""
    import torch
    from helpers import micro_config

    from blip_core.config.train import EvalConfig
    from blip_core.eval.retrieval import itc_similarity, rank_pairs
    from blip_core.models.blip.model import BlipRetrieval

    torch.manual_seed(0)
    model = BlipRetrieval(micro_config()).eval()
    images = torch.randn(6, 3, 32, 32)
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(3, 12, (12,), generator=g)
    ids = torch.randint(7, 120, (12, 12), generator=g)
    ids[:, 0] = 2
    mask = (torch.arange(12)[None] < lengths[:, None]).long()
    ids = ids.masked_fill(mask == 0, 0)

    class Processor:  # texts are their row numbers here
        tokenizer = type("Tok", (), {"pad_token_id": 0})

        def __call__(self, texts):
            rows = [int(t) for t in texts]
            return ids[rows], mask[rows]

    def encode(s, e):
        emb = model.image_embeds(images[s:e])
        return model.image_feat(emb), emb

    k = 3
    cfg = EvalConfig(k_test=k, batch_size=4)  # 2 image blocks, chunks of 16 rows
    with torch.no_grad():
        i2t, t2i, txt2img, _ = rank_pairs(model, [[str(2 * i), str(2 * i + 1)] for i in range(6)], encode,
                                          Processor(), cfg, torch.device("cpu"))  # fmt: skip
        emb = model.image_embeds(images)
        sims = itc_similarity(model.image_feat(emb), model.text_feat(ids, mask))
        for i in range(6):
            top = set(sims[i].topk(k).indices.tolist())
            for t in range(12):
                want = model.itm_logits(emb[i : i + 1], ids[t : t + 1], mask[t : t + 1])[0, 1] + sims[i, t]
                assert i2t[i, t] == pytest.approx(float(want), abs=1e-4) if t in top else i2t[i, t] == -100
        for t in range(12):
            top = set(sims[:, t].topk(k).indices.tolist())
            for i in range(6):
                want = model.itm_logits(emb[i : i + 1], ids[t : t + 1], mask[t : t + 1])[0, 1] + sims[i, t]
                assert t2i[t, i] == pytest.approx(float(want), abs=1e-4) if i in top else t2i[t, i] == -100
    assert txt2img.tolist() == [i for i in range(6) for _ in range(2)]
