"""CapFilt end to end on the tiny world with micro models: per-shard idempotence, kill-and-resume
equality, reshard contents and provenance, the CLI, and the Great Expectations gates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from helpers import micro_capfilt_models

from blip_core.capfilt import folders, steps
from blip_core.config.pipeline import CapFiltConfig
from blip_core.data.reader import iter_samples
from blip_core.data.shards import read_manifests


@pytest.fixture(scope="module")
def models(tiny_world, tmp_path_factory):
    return micro_capfilt_models(tiny_world, tmp_path_factory.mktemp("capfilt_models"))


def _cfg(**kw) -> CapFiltConfig:
    return CapFiltConfig(**({"num_captions": 2, "caption_batch_size": 16, "filter_batch_size": 16} | kw))


def _run_score(tiny_world, models, work, cfg) -> dict:
    return folders.run_score(tiny_world / "web", folders.CapFiltModels(*models), cfg, work)


def test_caption_and_filter_outputs_are_complete_and_idempotent(tiny_world, models, tmp_path):
    cfg = _cfg()
    first = _run_score(tiny_world, models, tmp_path, cfg)
    assert first["caption"]["images"] == 240 and first["filter"]["images"] == 240
    caps = pd.concat([pq.read_table(p).to_pandas() for p in sorted((tmp_path / "captions").glob("*.parquet"))])
    assert len(caps) == 240 * 2 and caps.groupby("key").size().eq(2).all()
    scores = steps.read_scores(sorted((tmp_path / "scores").glob("*.parquet")))
    assert len(scores) == 240 * 3 and not scores.duplicated(["key", "cand"]).any()
    # labels hold across batches (16 images each): cand 0 is the web caption, the rest synthetic
    assert scores.groupby("source").size().to_dict() == {"synthetic": 480, "web": 240}
    assert (scores["source"] == "web").eq(scores["cand"] == 0).all()
    assert scores["itm_prob"].between(0, 1).all() and scores["itc_cosine"].between(-1, 1).all()
    web = scores[scores["source"] == "web"]
    assert set(web["gt_noise_type"]) <= {"clean", "mismatched", "corrupted", "spam", "uninformative"}
    assert scores.loc[scores["source"] == "synthetic", "gt_noisy"].notna().all()  # grounded against the scene
    # the captioner's confidence travels with each synthetic caption into its score row
    assert caps["confidence"].between(0, 1).all()
    synthetic = scores[scores["source"] == "synthetic"].merge(
        caps, left_on=["key", "caption"], right_on=["key", "caption"]
    )
    assert (
        synthetic["confidence_x"].sub(synthetic["confidence_y"]).abs().max() < 1e-6 and web["confidence"].isna().all()
    )
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.parquet")}
    second = _run_score(tiny_world, models, tmp_path, cfg)
    assert second["caption"]["shards_skipped"] == 3 and second["filter"]["shards_skipped"] == 3
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.parquet")} == mtimes
    # a changed generation config is a different output, never a stale reuse
    third = _run_score(tiny_world, models, tmp_path, _cfg(top_p=0.5))
    assert third["caption"]["shards_skipped"] == 0
    # so is another batch size: the shard's generator draws per batch
    fourth = _run_score(tiny_world, models, tmp_path, _cfg(caption_batch_size=8))
    assert fourth["caption"]["shards_skipped"] == 0


def test_killed_run_resumes_to_identical_output(tiny_world, models, tmp_path, monkeypatch):
    cfg = _cfg()
    _run_score(tiny_world, models, tmp_path / "full", cfg)
    real = steps.caption_shard
    calls = []

    def killed_on_second_shard(shard, *a, **kw):
        calls.append(shard)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(shard, *a, **kw)

    monkeypatch.setattr(steps, "caption_shard", killed_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        _run_score(tiny_world, models, tmp_path / "resumed", cfg)
    monkeypatch.setattr(steps, "caption_shard", real)
    assert len(list((tmp_path / "resumed" / "captions").glob("*.parquet"))) == 1  # nothing half-written
    assert not list((tmp_path / "resumed").rglob(".*.tmp"))
    resumed = _run_score(tiny_world, models, tmp_path / "resumed", cfg)
    assert resumed["caption"]["shards_skipped"] == 1
    for sub in ("captions", "scores"):
        full = sorted((tmp_path / "full" / sub).glob("*.parquet"))
        res = sorted((tmp_path / "resumed" / sub).glob("*.parquet"))
        assert [p.name for p in full] == [p.name for p in res]
        for a, b in zip(full, res, strict=True):
            pd.testing.assert_frame_equal(pq.read_table(a).to_pandas(), pq.read_table(b).to_pandas())


def test_select_and_reshard_write_kept_captions_with_provenance(tiny_world, models, tmp_path):
    cfg = _cfg(policy="both", threshold=0.5)
    m = folders.CapFiltModels(*models)
    folders.run_score(tiny_world / "web", m, cfg, tmp_path)
    quality = folders.run_select(cfg, tmp_path, metrics_dir=tmp_path / "metrics")  # no model paths needed
    assert {"filter/auroc", "filter/precision", "filter/recall", "keep_rate/web"} <= set(quality)
    assert (tmp_path / "metrics" / "plots" / "score_hist.png").stat().st_size > 1000
    assert (tmp_path / "metrics" / "plots" / "precision_recall.png").is_file()
    summary = folders.run_reshard([tiny_world / "coco_train"], tiny_world / "web", tmp_path, tmp_path / "out")
    sel = pd.read_parquet(tmp_path / "selection.parquet")
    kept = sel[sel["keep"]]
    samples = list(iter_samples(tmp_path / "out"))
    keys = [s["key"] for s in samples]
    assert len(keys) == len(set(keys))  # nothing duplicated
    web_keys = {k for k in keys if k.startswith("web")}
    assert web_keys == set(kept["key"])  # every image with a kept caption, and only those
    assert sum(k.startswith("coco_train") for k in keys) == 40  # human split kept whole
    assert summary["images"] == len(keys) and summary["dropped_images"] == 240 - len(web_keys)
    ids = m.ids()
    for s in samples:
        prov = s["meta"]["provenance"]
        assert len(prov) == len(s["captions"])
        if s["key"].startswith("web"):
            expected = kept[kept["key"] == s["key"]].sort_values("cand")
            assert s["captions"] == expected["caption"].tolist()
            assert all(p["itm_prob"] >= 0.5 and p["filter_ckpt"] == ids["filter"] for p in prov)
            assert {p["source"] for p in prov} <= {"web", "synthetic"}
        else:
            assert {p["source"] for p in prov} == {"human"} and len(s["captions"]) == 5
    assert read_manifests(tmp_path / "out")["num_captions"].min() >= 1
    # re-selection with another threshold needs no model: the stored scores suffice
    strict = steps.select(sel, CapFiltConfig(policy="both", threshold=0.9))
    assert strict["keep"].sum() <= kept.shape[0]


def test_leakage_check_finds_copied_eval_images(tiny_world, tmp_path):
    from blip_core.data.shards import ShardWriter
    from blip_core.eval.leakage import leakage_report

    clean = leakage_report([tiny_world / "val", tiny_world / "test"], [tiny_world / "coco_train", tiny_world / "web"])
    assert clean["leaked_total"] == 0
    with ShardWriter(tmp_path / "pool", 0, split="web") as w:  # two val images re-posted on the web
        for s in list(iter_samples(tiny_world / "val", keep_bytes=True))[:2]:
            w.write("copy-" + s["key"], s["image_bytes"], ["a repost"], source="web")
    report = leakage_report([tiny_world / "val"], [tmp_path / "pool"])
    assert report["leaked_total"] == 2 and report["splits"]["val"]["examples"][0]["pool_key"].startswith("copy-")


def test_cli_capfilt_run_and_validate(tiny_world, models, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        "capfilt:\n  num_captions: 1\n  caption_batch_size: 32\n  policy: both\n  threshold_mode: calibrated\n"
        "  calibration_quantile: 0.5\n"
        # random micro models: loosen the bands that a trained filter must meet
        "validate:\n  keep_rate_min: 0.0\n  keep_rate_max: 1.0\n  max_kept_over_raw: 100.0\n"
    )
    cap, filt = models
    blip = [sys.executable, "-m", "flows.cli"]
    args = [
        "--web",
        str(tiny_world / "web"),
        "--work",
        str(tmp_path / "work"),
        "--human",
        str(tiny_world / "coco_train"),
        "--captioner",
        str(cap),
        "--filter",
        str(filt),
        "--metrics",
        str(tmp_path / "m"),
        "--params",
        str(params),
        "--calibration",
        str(tiny_world / "val"),
    ]
    r = subprocess.run([*blip, "capfilt", "run", *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    quality = json.loads((tmp_path / "m" / "capfilt_quality.json").read_text())
    assert all(isinstance(v, int | float) for v in quality.values()), quality  # a DVC metrics file: numbers
    meta = json.loads((tmp_path / "work" / "selection.json").read_text())
    assert meta["policy"] == "both" and meta["threshold_mode"] == "calibrated"
    calib = steps.read_scores(sorted((tmp_path / "work" / "calibration").glob("*.parquet")))
    assert len(calib) == 8 * 5 and set(calib["source"]) == {"human"}  # every val caption scored
    assert quality["threshold"] == pytest.approx(calib["itm_prob"].quantile(0.5))
    gx_root = tmp_path / "gxroot"
    from flows.stages import stage_validate

    report = stage_validate("capfilt", tmp_path / "work", params=params, out_file=tmp_path / "v.json", gx_root=gx_root)
    assert report["success"] and {s["suite"] for s in report["suites"]} == {"capfilt_output", "capfilt_selection"}
    assert (gx_root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").is_file()
    # select and reshard read what the filter step wrote: no model paths
    web_work = ["--web", str(tiny_world / "web"), "--work", str(tmp_path / "work"), "--params", str(params)]
    r = subprocess.run([*blip, "capfilt", "select", *web_work, "--metrics", str(tmp_path / "m2")],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "m2" / "capfilt_quality.json").read_text())["threshold"] == quality["threshold"]
    # at a fixed threshold the quality report still shows the calibrated operating point
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(params.read_text().replace("threshold_mode: calibrated", "threshold_mode: fixed"))
    fixed_args = [*web_work[:4], "--params", str(fixed), "--metrics", str(tmp_path / "m3")]
    r = subprocess.run([*blip, "capfilt", "select", *fixed_args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    q = json.loads((tmp_path / "m3" / "capfilt_quality.json").read_text())
    assert q["threshold"] == 0.5 and q["calibrated/threshold"] == pytest.approx(quality["threshold"])
    assert "calibrated/kept/noise_rate" in q
    r = subprocess.run([*blip, "capfilt", "reshard", *web_work, "--human", str(tiny_world / "coco_train")],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    # a missing filter checkpoint is one clear line
    r = subprocess.run(
        [*blip, "capfilt", "filter", *web_work, "--captioner", str(cap), "--filter", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "filter checkpoint not found" in r.stderr


def test_score_index_is_rewritten_only_when_it_changes(tiny_world, models, tmp_path):
    """A re-run with nothing new must leave scores.json (and its mtime) alone: both runners decide
    from it whether select, reshard and the bootstrapped training must run again."""
    cfg = _cfg(policy="filter")
    m = folders.CapFiltModels(None, models[1])
    folders.run_score(tiny_world / "web", m, cfg, tmp_path)
    index = tmp_path / folders.SCORE_INDEX
    first = index.stat().st_mtime_ns
    folders.run_score(tiny_world / "web", m, cfg, tmp_path)
    assert index.stat().st_mtime_ns == first
    assert folders.read_score_index(tmp_path)["checkpoints"] == m.ids()


def test_opt_in_bf16_captioning_is_a_separate_output(tiny_world, models, tmp_path):
    """capfilt.caption_bf16 captions under CPU bf16 autocast: complete output, under its own name
    (other numerics, other samples), and the fp32 default keeps its name."""
    shard = sorted((tiny_world / "web").glob("*.tar"))[0]
    fp32, bf16 = _cfg(), _cfg(caption_bf16=True)
    m = folders.CapFiltModels(*models)
    a = folders.caption_one(shard, m, fp32, tmp_path)
    b = folders.caption_one(shard, m, bf16, tmp_path)
    assert a["path"] != b["path"]
    assert steps.caption_output(tmp_path / "captions", shard, m.ids()["captioner"], fp32).name == Path(a["path"]).name
    df = pq.read_table(b["path"]).to_pandas()
    assert len(df) == 100 * 2 and df["caption"].map(len).gt(0).all()


def test_a_cached_rerun_skips_the_scoring_subflow_only_when_every_output_is_current(tiny_world, models, tmp_path):
    from flows.capfilt_flow import already_scored

    params = tmp_path / "params.yaml"
    params.write_text("capfilt:\n  num_captions: 2\n  caption_batch_size: 16\n  filter_batch_size: 16\n")
    call = {"web_dir": str(tiny_world / "web"), "work_dir": str(tmp_path / "work"), "captioner": str(models[0]),
            "filter_model": str(models[1]), "params": str(params)}  # fmt: skip
    assert already_scored(**call) is None  # nothing scored yet
    _run_score(tiny_world, models, tmp_path / "work", _cfg())
    assert already_scored(**call) == {"shards": 3, "captioned_images": 0, "scored_images": 0, "skipped_shards": 3,
                                      "served_from_outputs": True}  # fmt: skip
    params.write_text("capfilt:\n  num_captions: 2\n  caption_batch_size: 16\n  filter_batch_size: 16\n  top_p: 0.5\n")
    assert already_scored(**call) is None  # another generation config: other captions to make
    params.write_text("capfilt:\n  num_captions: 2\n  caption_batch_size: 16\n  filter_batch_size: 16\n")
    next((tmp_path / "work" / "scores").glob("*.parquet")).unlink()
    assert already_scored(**call) is None  # a score file is gone
