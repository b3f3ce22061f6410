"""The composition benchmark runs end to end (tiny world, untrained micro models, a few steps): its
figures are the README's evidence that relations and counts are learnable from enough scenes, so
the script must not rot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import micro_capfilt_models

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize(("model", "probe_name"), [("filter", "relation"), ("captioner", "count")])
def test_bench_composition_trains_the_text_side_and_reports_each_size(
    tiny_world, tmp_path, monkeypatch, model, probe_name
):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_composition

    models = dict(zip(("captioner", "filter"), micro_capfilt_models(tiny_world, tmp_path), strict=True))
    out = tmp_path / "composition.json"
    monkeypatch.setattr(sys, "argv", ["bench_composition.py", "--model", str(models[model]), "--probe", probe_name,
                                      "--train", str(tiny_world / "objects"), "--test", str(tiny_world / "test"),
                                      "--scenes", "40,80", "--steps", "4", "--batch", "4", "--eval-every", "2",
                                      "--json", str(out)])  # fmt: skip
    bench_composition.main()
    doc = json.loads(out.read_text())
    assert doc["probe"] == probe_name and [r["scenes"] for r in doc["runs"]] == [40, 80]
    for run in doc["runs"]:
        assert run["statements"] > 0 and 0.0 <= run["before"] <= 1.0
        assert [row["step"] for row in run["curve"]] == [2, 4]
        assert all(0.0 <= row["train"] <= 1.0 and 0.0 <= row["test"] <= 1.0 for row in run["curve"])
    assert [f["reference"] for f in doc["figures"]] == ["40 scenes", "40 scenes"] and doc["figures"][0]["ratio"] == 1.0
    # a step trains the text side only: the tower whose features were computed once stays as it was
    probe = bench_composition.Probe(str(models[model]), 1e-3)
    split = bench_composition.load_scenes(str(tiny_world / "objects"), probe.mcfg.vision.image_size, 40)
    before = {k: v.clone() for k, v in probe.model.state_dict().items()}
    probe.step(probe.features(split.images), bench_composition.PROBES[probe_name](split.scenes)[:4])
    after = probe.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("visual_encoder."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("text."))


def test_bench_composition_refuses_other_kinds(tiny_world, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_composition

    from blip_core.models import pretrained

    captioner, _ = micro_capfilt_models(tiny_world, tmp_path)
    pre = tmp_path / "pre"
    pretrained.save_pretrained(pretrained.create_model("pretrain", pretrained.read_config(captioner)[1]), pre)
    with pytest.raises(ValueError, match="must be a filter .retrieval. or captioner checkpoint"):
        bench_composition.Probe(str(pre), 1e-4)
