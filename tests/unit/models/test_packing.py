"""CPU inference with pre-packed linear weights: same results as F.linear (to fp32 rounding), used only
where it is valid (no grad, fp32, CPU, no autocast, weights unchanged since packing)."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from blip_core.models.blip.model import BlipCaptioner, BlipRetrieval
from blip_core.models.common import packing
from blip_core.models.common.generate import GenerationConfig, generate
from blip_core.models.common.packing import PackedLinear, pack_for_cpu_inference
from blip_core.models.pretrained import load_for_inference, save_pretrained

pytestmark = pytest.mark.skipif(not packing.supported(), reason="this torch build has no oneDNN packed linear")

PROMPT = torch.tensor([5, 20, 21])


def _close(a, b):
    # fp32 with another summation order: differences at rounding level, never bit-exactness
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _models(cfg):
    torch.manual_seed(0)
    cap, ret = BlipCaptioner(cfg).eval(), BlipRetrieval(cfg).eval()
    return cap, ret, copy.deepcopy(cap), copy.deepcopy(ret)


def test_packed_models_match_unpacked(cfg):
    cap, ret, cap_ref, ret_ref = _models(cfg)
    n_linear = sum(type(m) is torch.nn.Linear for m in cap.modules())
    assert pack_for_cpu_inference(cap) == n_linear + 1  # + the LM head tied to the word embeddings
    pack_for_cpu_inference(ret)
    assert all(type(m) is not torch.nn.Linear for m in cap.modules())
    imgs = torch.randn(3, 3, 32, 32)
    ids = torch.randint(7, 120, (6, 9))
    ids[:, 0] = 2
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.no_grad():
        emb, emb_ref = cap.image_embeds(imgs), cap_ref.image_embeds(imgs)
        _close(emb, emb_ref)
        h = cap.text(ids, mask, mode="decoder", image_embeds=emb)
        _close(cap.text.logits(h), cap_ref.text.logits(cap_ref.text(ids, mask, mode="decoder", image_embeds=emb_ref)))
        itm, itm_ref = (m.itm_logits(m.image_embeds(imgs), ids, mask) for m in (ret, ret_ref))
        _close(itm, itm_ref)
    g = GenerationConfig(method="beam", num_beams=3, max_length=12, min_length=5)
    got, ref = generate(cap, emb, PROMPT, g), generate(cap_ref, emb_ref, PROMPT, g)
    assert got.shape[0] == ref.shape[0] == 3 and (got[:, :3] == PROMPT).all()


def test_packed_path_is_taken_only_where_valid(cfg, monkeypatch):
    cap, _, _, _ = _models(cfg)
    pack_for_cpu_inference(cap)
    lin = cap.text.encoder.layer[0].intermediate.dense
    assert isinstance(lin, PackedLinear) and lin.packed is not None
    calls = []
    real = torch.ops.mkldnn._linear_pointwise
    monkeypatch.setattr(packing, "_packed_linear", lambda *a: calls.append(1) or real(*a, "none", [], ""))
    x = torch.randn(2, 5, lin.in_features)
    with torch.no_grad():
        _close(lin(x), F.linear(x, lin.weight, lin.bias))
    assert calls == [1]
    # gradient mode: plain F.linear, and the gradient reaches the weight
    y = lin(x)
    y.sum().backward()
    assert lin.weight.grad is not None and len(calls) == 1
    # autocast: F.linear (autocast's bf16 cast applies)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert lin(x).dtype == torch.bfloat16
    # weights changed after packing (load_state_dict, optimiser step): the stale pack is not used
    with torch.no_grad():
        lin.weight.add_(1.0)
        assert torch.equal(lin(x), F.linear(x, lin.weight, lin.bias))
    assert len(calls) == 1
    pack_for_cpu_inference(cap)  # re-packing makes it valid again
    with torch.no_grad():
        _close(lin(x), F.linear(x, lin.weight, lin.bias))
    assert len(calls) == 2


def test_copies_and_pickles_fall_back_to_plain_linear(cfg):
    cap, _, _, _ = _models(cfg)
    pack_for_cpu_inference(cap)
    for clone in (copy.deepcopy(cap), pickle.loads(pickle.dumps(cap))):
        assert clone.text.packed is None and clone.text.encoder.layer[0].intermediate.dense.packed is None
        with torch.no_grad():
            _close(clone.image_embeds(torch.ones(1, 3, 32, 32)), cap.image_embeds(torch.ones(1, 3, 32, 32)))
    assert list(cap.state_dict()) == list(BlipCaptioner(cfg).state_dict())  # same keys: checkpoints unchanged


def test_load_for_inference_packs_on_cpu(cfg, tmp_path):
    cap, _, _, _ = _models(cfg)
    save_pretrained(cap, tmp_path / "ckpt")
    model = load_for_inference(tmp_path / "ckpt")
    assert not model.training and model.text.packed is not None
    assert isinstance(model.text.encoder.layer[0].attention.self.query, PackedLinear)
