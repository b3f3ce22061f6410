"""Selection policies and filter-quality metrics on hand-built scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from blip_core.capfilt.quality import auroc, filter_quality, pr_curve
from blip_core.capfilt.steps import resolve_threshold, select, shard_seed
from blip_core.config.pipeline import CapFiltConfig


def _scores() -> pd.DataFrame:
    # 4 images, each with its web caption (cand 0) and one synthetic caption (cand 1)
    rows = []
    web = [(0.9, 0.5, "clean"), (0.2, 0.1, "spam"), (0.6, 0.3, "mismatched"), (0.4, 0.4, "clean")]
    syn = [(0.8, 0.6, False), (0.7, 0.2, False), (0.1, 0.0, True), (0.5, 0.1, False)]
    for i, ((pw, cw, nt), (ps, cs, noisy)) in enumerate(zip(web, syn, strict=True)):
        rows.append(
            dict(
                key=f"k{i}",
                shard="00000",
                cand=0,
                source="web",
                caption=f"web {i}",
                itm_prob=pw,
                itc_cosine=cw,
                gt_noise_type=nt,
                gt_noisy=nt != "clean",
            )
        )
        rows.append(
            dict(
                key=f"k{i}",
                shard="00000",
                cand=1,
                source="synthetic",
                caption=f"syn {i}",
                itm_prob=ps,
                itc_cosine=cs,
                gt_noise_type="synthetic",
                gt_noisy=noisy,
            )
        )
    return pd.DataFrame(rows)


def _kept(policy: str, **kw) -> list[tuple[str, int]]:
    sel = select(_scores(), CapFiltConfig(policy=policy, **kw))
    return sorted(zip(sel.loc[sel["keep"], "key"], sel.loc[sel["keep"], "cand"]))


def test_policies_keep_what_the_paper_says():
    assert _kept("none") == [("k0", 0), ("k1", 0), ("k2", 0), ("k3", 0)]
    assert _kept("filter") == [("k0", 0), ("k2", 0)]  # web captions with p >= 0.5
    assert _kept("captioner") == [(f"k{i}", c) for i in range(4) for c in (0, 1)]
    assert _kept("both") == [("k0", 0), ("k0", 1), ("k1", 1), ("k2", 0), ("k3", 1)]  # 0.5 is kept (>=)
    assert _kept("both", threshold=0.75) == [("k0", 0), ("k0", 1)]


def _best_of_n_scores() -> pd.DataFrame:
    # one image, its web caption and four synthetic ones (two tie at 0.7; one fails the threshold)
    probs = [0.6, 0.7, 0.9, 0.4, 0.7]
    return pd.DataFrame(
        dict(
            key="k0",
            shard="00000",
            cand=list(range(5)),
            source=["web"] + ["synthetic"] * 4,
            caption=[f"c{i}" for i in range(5)],
            itm_prob=probs,
            itc_cosine=0.0,
            gt_noise_type=["clean"] + ["synthetic"] * 4,
            gt_noisy=False,
        )
    )


def test_max_synthetic_keeps_each_images_best_synthetic_captions_by_p_match():
    def kept(**kw):
        sel = select(_best_of_n_scores(), CapFiltConfig(policy="both", **kw))
        return sel.loc[sel["keep"], "cand"].tolist(), sel.loc[sel["over_cap"], "cand"].tolist()

    assert kept() == ([0, 1, 2, 4], [])  # 0: every synthetic caption that passes (BLIP)
    assert kept(max_synthetic=1) == ([0, 2], [1, 4])  # the web caption is never capped
    assert kept(max_synthetic=2) == ([0, 1, 2], [4])  # a tie goes to the first candidate
    assert kept(max_synthetic=9) == ([0, 1, 2, 4], [])
    # a caption under the threshold takes no slot: the cap applies to what passes
    assert kept(max_synthetic=3, threshold=0.75) == ([2], [])
    # the captioner policy (no filter) ranks too: best-of-N without a threshold
    sel = select(_best_of_n_scores(), CapFiltConfig(policy="captioner", max_synthetic=1))
    assert sel.loc[sel["keep"], "cand"].tolist() == [0, 2]


def test_max_synthetic_ranks_within_each_image():
    sel = select(_scores(), CapFiltConfig(policy="both", max_synthetic=1))  # one synthetic caption per image
    assert sorted(zip(sel.loc[sel["keep"], "key"], sel.loc[sel["keep"], "cand"])) == [
        ("k0", 0), ("k0", 1), ("k1", 1), ("k2", 0), ("k3", 1)
    ]  # fmt: skip
    with pytest.raises(ValueError, match="max_synthetic"):
        CapFiltConfig(max_synthetic=-1)


def test_clip_score_baseline_keeps_top_fraction_of_web_by_cosine():
    assert _kept("clip_score", clip_keep_fraction=0.5) == [("k0", 0), ("k3", 0)]  # cosines 0.5, 0.4
    assert _kept("clip_score", clip_keep_fraction=0.25) == [("k0", 0)]
    assert _kept("clip_score", clip_keep_fraction=1.0) == [("k0", 0), ("k1", 0), ("k2", 0), ("k3", 0)]


def test_calibrated_threshold_is_a_quantile_of_clean_pair_scores():
    calib = pd.DataFrame({"itm_prob": np.linspace(0.2, 0.4, 11)})
    cfg = CapFiltConfig(policy="both", threshold_mode="calibrated", calibration_quantile=0.5)
    assert resolve_threshold(cfg, calib) == pytest.approx(0.3)
    assert resolve_threshold(CapFiltConfig(threshold=0.7), calib) == 0.7  # fixed ignores calibration
    with pytest.raises(ValueError, match="--calibration"):
        resolve_threshold(cfg, None)
    sel = select(_scores(), cfg, threshold=0.3)
    assert sorted(zip(sel.loc[sel["keep"], "key"], sel.loc[sel["keep"], "cand"])) == [
        ("k0", 0), ("k0", 1), ("k1", 1), ("k2", 0), ("k3", 0), ("k3", 1)
    ]  # fmt: skip


def test_selection_does_not_read_ground_truth():
    a = select(_scores(), CapFiltConfig(policy="both"))
    flipped = _scores().assign(gt_noisy=lambda d: ~d["gt_noisy"], gt_noise_type="x")
    b = select(flipped, CapFiltConfig(policy="both"))
    assert a["keep"].tolist() == b["keep"].tolist()


def test_bad_policy_and_threshold_are_rejected_naming_the_key():
    with pytest.raises(ValueError, match="capfilt.policy"):
        CapFiltConfig(policy="magic")
    with pytest.raises(ValueError, match="capfilt.threshold"):
        CapFiltConfig(threshold=1.5)


def test_auroc_matches_definition():
    assert auroc(np.array([1, 1, 0, 0]), np.array([0.9, 0.8, 0.2, 0.1])) == 1.0
    assert auroc(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.0
    assert auroc(np.array([1, 0]), np.array([0.5, 0.5])) == 0.5  # ties count half
    # pairwise definition on random data
    rng = np.random.default_rng(0)
    y, s = rng.random(200) < 0.3, rng.random(200)
    pairs = [(a > b) + 0.5 * (a == b) for a in s[y] for b in s[~y]]
    assert auroc(y, s) == pytest.approx(np.mean(pairs))
    assert np.isnan(auroc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_filter_quality_on_known_selection():
    sel = select(_scores(), CapFiltConfig(policy="both"))
    q = filter_quality(sel, 0.5)
    # web: noisy = k1 (0.2, removed) and k2 (0.6, kept); removed = k1, k3 (0.4, clean)
    assert q["filter/precision"] == 0.5 and q["filter/recall"] == 0.5
    assert q["filter/removed_rate/spam"] == 1.0 and q["filter/removed_rate/mismatched"] == 0.0
    # noisy {0.2, 0.6} vs clean {0.9, 0.4}: lower p(match) ranks noisier in 3 of 4 pairs
    assert q["filter/auroc"] == pytest.approx(0.75)
    assert q["keep_rate/web"] == 0.5 and q["keep_rate/synthetic"] == 0.75
    assert q["synthetic/grounded_accuracy"] == 0.75
    assert q["kept/noise_rate"] == pytest.approx(1 / 5)  # kept: k0 web, k0 syn, k1 syn, k2 web (noisy), k3 syn
    curve = pr_curve(np.array([True, False, True]), np.array([0.9, 0.5, 0.1])).sort_values("score", ascending=False)
    assert curve["precision"].tolist() == [1.0, 0.5, 2 / 3] and curve["recall"].tolist() == [0.5, 0.5, 1.0]


def test_shard_seed_depends_only_on_seed_and_shard():
    assert shard_seed(0, "00001") == shard_seed(0, "00001")
    assert len({shard_seed(0, "00001"), shard_seed(1, "00001"), shard_seed(0, "00002")}) == 3


def test_a_caption_the_image_already_keeps_is_kept_once():
    """The captioner can write an image's alt-text word for word: one copy is kept (the web one)."""
    df = _scores()
    df.loc[1, "caption"] = df.loc[0, "caption"]  # k0's synthetic caption repeats its web caption
    df.loc[3, "caption"] = "web 0"  # the same text for another image is no repeat
    sel = select(df, CapFiltConfig(policy="both"), threshold=0.5)
    assert sel["repeat"].tolist() == [False, True] + [False] * 6
    assert sel.loc[0, "keep"] and not sel.loc[1, "keep"] and sel.loc[3, "keep"]
    assert filter_quality(sel, 0.5)["kept/repeats_dropped"] == 1
    # a repeat that the policy drops anyway is no repeat
    assert not select(df, CapFiltConfig(policy="none"), threshold=0.5)["repeat"].any()


def test_top_k_keeps_each_images_best_captions_web_and_synthetic_together():
    """BLIP-2's CapFilt: rank an image's web and synthetic captions together, keep the top k, no
    threshold; ties go to the earlier candidate; a repeat of a kept caption does not use up k."""
    df = _best_of_n_scores().assign(itc_cosine=[0.2, 0.5, 0.1, 0.9, 0.5])
    sel = select(df, CapFiltConfig(policy="top_k", top_k=2))  # by ITC cosine (BLIP-2: CLIP similarity)
    assert sel.loc[sel["keep"], "cand"].tolist() == [1, 3]
    sel = select(df, CapFiltConfig(policy="top_k", top_k=2, top_k_score="itm_prob"))
    assert sel.loc[sel["keep"], "cand"].tolist() == [1, 2]  # 0.9 then the first 0.7
    df.loc[3, "caption"] = "c1"  # candidate 3 repeats candidate 1 word for word
    sel = select(df, CapFiltConfig(policy="top_k", top_k=2))
    assert sel.loc[sel["keep"], "cand"].tolist() == [1, 4] and sel.loc[3, "repeat"] | ~sel.loc[3, "keep"]
    # per image: every image keeps min(k, its captions)
    sel = select(_scores(), CapFiltConfig(policy="top_k", top_k=1))
    assert sorted(zip(sel.loc[sel["keep"], "key"], sel.loc[sel["keep"], "cand"])) == [
        ("k0", 1), ("k1", 1), ("k2", 0), ("k3", 0)]  # fmt: skip
    with pytest.raises(ValueError, match="top_k"):
        CapFiltConfig(policy="top_k", top_k=0)


def test_min_confidence_keeps_only_synthetic_captions_the_captioner_was_sure_of():
    """capfilt.min_confidence: a synthetic caption whose least sure attribute word is below it takes no
    part (marked `unsure`), under every policy that keeps synthetic captions; web captions never."""
    scores = _scores()
    scores["confidence"] = [None, 0.9, None, 0.3, None, 0.2, None, 0.5]  # per row: web, syn, web, syn, ...
    sel = select(scores, CapFiltConfig(policy="both", min_confidence=0.5))
    kept = sorted(zip(sel.loc[sel["keep"], "key"], sel.loc[sel["keep"], "cand"]))
    assert kept == [("k0", 0), ("k0", 1), ("k2", 0), ("k3", 1)]  # k1's synthetic (0.3) dropped; 0.5 passes (>=)
    assert sel.loc[sel["unsure"], "key"].tolist() == ["k1", "k2"]
    sel = select(scores, CapFiltConfig(policy="captioner", min_confidence=0.5))
    assert int(sel["keep"].sum()) == 6 and not sel.loc[sel["unsure"], "keep"].any()
    top = select(scores, CapFiltConfig(policy="top_k", top_k=1, top_k_score="itm_prob", min_confidence=0.5))
    assert ("k1", 0) in list(zip(top.loc[top["keep"], "key"], top.loc[top["keep"], "cand"]))  # its web caption instead
    q = filter_quality(sel, 0.5)
    assert q["kept/unsure_dropped"] == 2 and q["synthetic/confidence_auroc"] == pytest.approx(1.0)  # k2's is false
    assert select(_scores(), CapFiltConfig(policy="both"))["unsure"].sum() == 0  # off: BLIP
    with pytest.raises(ValueError, match="re-run capfilt_score"):
        select(_scores(), CapFiltConfig(policy="both", min_confidence=0.5))
    with pytest.raises(ValueError, match="min_confidence"):
        CapFiltConfig(min_confidence=1.5)
