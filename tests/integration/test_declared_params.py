"""A stage whose params name only some keys of a section (the CapFilt stages) must depend on no other
key of it: changing any undeclared key leaves its outputs, and so its cache, exactly as they were.
A new knob that changes CapFilt's captions (e.g. beam instead of nucleus) fails here until the
stage declares it, instead of being served stale from the cache."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from blip_core.capfilt.steps import caption_output, select
from blip_core.config.loader import from_dict
from blip_core.config.pipeline import CAPFILT_POLICIES, CapFiltConfig
from flows import dag


def _declared(stage: str, section: str) -> set[str]:
    keys = dag.by_name(stage).params
    assert section not in keys, f"{stage} declares all of {section}: nothing to check"
    return {k.split(".", 1)[1] for k in keys if k.startswith(section + ".")}


def _other_value(cfg, name: str):
    """A valid value of `name` other than `cfg`'s (None when the field has no other valid value)."""
    value = getattr(cfg, name)
    if isinstance(value, bool):
        candidates = [not value]
    elif isinstance(value, int):
        candidates = [value + 1, value - 1]
    elif isinstance(value, float):
        candidates = [value * 0.9, value * 1.1, value + 0.05]
    elif name == "policy":
        candidates = [p for p in CAPFILT_POLICIES if p != value]
    elif name == "threshold_mode":
        candidates = ["calibrated" if value == "fixed" else "fixed"]
    elif name == "top_k_score":
        candidates = ["itm_prob" if value == "itc_cosine" else "itc_cosine"]
    else:
        raise AssertionError(f"no variant for capfilt.{name} ({type(value).__name__}): teach the test one")
    for c in candidates:
        try:
            return from_dict(CapFiltConfig, dataclasses.asdict(cfg) | {name: c}, section="capfilt")
        except ValueError:
            continue
    return None


def _undeclared_variants(cfg, stage: str):
    declared = _declared(stage, "capfilt")
    out = []
    for f in dataclasses.fields(CapFiltConfig):
        if f.name not in declared and (other := _other_value(cfg, f.name)) is not None:
            out.append((f.name, other))
    return out


def test_capfilt_score_outputs_depend_only_on_its_declared_keys(tmp_path):
    shard = tmp_path / "web-000000.tar"
    shard.write_bytes(b"a shard's bytes")
    cfg = CapFiltConfig()
    variants = _undeclared_variants(cfg, "capfilt_score")
    assert {"threshold", "calibration_quantile", "clip_keep_fraction"} <= {n for n, _ in variants}
    for name, other in variants:
        assert caption_output(tmp_path, shard, "ckpt", other) == caption_output(tmp_path, shard, "ckpt", cfg), (
            f"capfilt.{name} changes capfilt_score's captions: declare it in the stage's params (flows/dag.py)"
        )
    # and the check can fail: a declared key does change them
    assert caption_output(tmp_path, shard, "ckpt", _other_value(cfg, "top_p")) != caption_output(
        tmp_path, shard, "ckpt", cfg
    )


@pytest.mark.parametrize("policy", CAPFILT_POLICIES)
def test_capfilt_select_depends_only_on_its_declared_keys(policy):
    rng = np.random.default_rng(0)
    n = 60
    scores = pd.DataFrame({
        "key": [f"img{i // 3:03d}" for i in range(n)],
        "source": ["web" if i % 3 == 0 else "synthetic" for i in range(n)],
        "caption": [f"caption {i % 7}" for i in range(n)],
        "itm_prob": rng.uniform(size=n),
        "itc_cosine": rng.uniform(-1, 1, size=n),
    })  # fmt: skip
    cfg = CapFiltConfig(policy=policy)
    for name, other in _undeclared_variants(cfg, "capfilt_select"):
        pd.testing.assert_frame_equal(select(scores, other), select(scores, cfg), obj=f"capfilt.{name}")
