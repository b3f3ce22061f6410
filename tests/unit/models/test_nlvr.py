"""BlipNLVR: shapes, the twin cross-attention, pre-training state conversion, a tiny over-fit, and
evaluate_nlvr."""

from __future__ import annotations

import pytest
import torch
from helpers import micro_config, text_batch
from PIL import Image

from blip_core.config.train import EvalConfig
from blip_core.data.task_data import TaskItem
from blip_core.data.transforms import eval_transform
from blip_core.eval.nlvr import evaluate_nlvr
from blip_core.models.blip.model import BlipPretrain
from blip_core.models.blip.nlvr import BlipNLVR, TwinCrossAttention, nlvr_state_from_pretrain
from blip_core.models.blip.presets import with_tokenizer
from blip_core.models.common.med import MED
from blip_core.models.common.tokenizer import TextProcessor, train_tokenizer
from blip_core.models.pretrained import load_converted


def test_forward_shapes_and_finite_loss(cfg):
    model = BlipNLVR(cfg)
    ids, mask = text_batch(B=4)
    left, right = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    assert set(model(left, right, ids, mask)) == {"logits"}
    out = model(left, right, ids, mask, labels=torch.tensor([True, False, True, False]))
    assert out["logits"].shape == (4, 2)
    assert out["nlvr_loss"].ndim == 0 and torch.isfinite(out["nlvr_loss"])
    out["nlvr_loss"].backward()
    cross = model.text_encoder.encoder.layer[0].crossattention
    assert cross.self0.key.weight.grad is not None and cross.self1.key.weight.grad is not None
    # the later half merges by concatenation + a merge layer, the first half averages
    layers = model.text_encoder.encoder.layer
    assert [layer.crossattention.output.merge_layer is not None for layer in layers] == [False, True]
    assert isinstance(cross, TwinCrossAttention)


def test_med_keys_stay_as_they_were(cfg):
    """The NLVR encoder replaces cross-attention modules; MED's own keys are untouched."""
    med = MED(cfg.text, cfg.vision.width, cross_attention=True)
    nlvr_keys = {k.removeprefix("text_encoder.") for k in BlipNLVR(cfg).state_dict() if k.startswith("text_encoder.")}
    assert {k for k in med.state_dict() if ".crossattention." not in k} == {
        k for k in nlvr_keys if ".crossattention." not in k
    }


def test_pretrain_state_loads_with_twin_copies(cfg):
    pre = BlipPretrain(cfg).eval()
    state = pre.state_dict()
    converted, fresh = nlvr_state_from_pretrain(state)
    assert set(fresh) == {
        "text_encoder.encoder.layer.1.crossattention.output.merge_layer.weight",
        "text_encoder.encoder.layer.1.crossattention.output.merge_layer.bias",
        "cls_head.0.weight", "cls_head.0.bias", "cls_head.2.weight", "cls_head.2.bias",
    }  # fmt: skip
    assert not any(".attention_dec." in k or "lm_head" in k or k.endswith("_m") for k in converted)
    model = BlipNLVR(cfg).eval()
    assert load_converted(model, state) == fresh
    single = pre.text.encoder.layer[0].crossattention
    twin = model.text_encoder.encoder.layer[0].crossattention
    for branch in (twin.self0, twin.self1):
        assert torch.equal(branch.query.weight, single.self.query.weight)
        assert torch.equal(branch.value.bias, single.self.value.bias)
    assert torch.equal(twin.output.dense1.weight, single.output.dense.weight)
    # an averaging layer given the same image twice is the pre-trained cross-attention
    x, img = torch.randn(3, 5, cfg.text.hidden_size), torch.randn(3, 17, cfg.vision.width)
    with torch.no_grad():
        assert torch.allclose(twin(x, context=(img, img)), single(x, context=img), atol=1e-5)
    with pytest.raises(ValueError, match="no text.encoder.layer"):
        nlvr_state_from_pretrain({"visual_encoder.cls_token": state["visual_encoder.cls_token"]})


# ---- a tiny world: pairs of coloured squares, "same" / "different" statements -----------------------------

COLORS = [(220, 30, 30), (30, 200, 40), (30, 40, 220), (230, 220, 30)]
PAIRS = [(0, 0), (1, 1), (0, 2), (3, 1)]


def _items() -> list[TaskItem]:
    items = []
    for i, (a, b) in enumerate(PAIRS):
        imgs = [Image.new("RGB", (32, 32), COLORS[a]), Image.new("RGB", (32, 32), COLORS[b])]
        for kind, statement in (("same", "both squares have the same color"),
                                ("different", "the two squares have different colors")):  # fmt: skip
            label = (a == b) == (kind == "same")
            items.append(TaskItem(f"p{i}{kind}", imgs, {"statement": statement, "label": label, "type": kind}))
    return items


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    texts = [it.fields["statement"] for it in _items()] + ["a picture of"]
    return TextProcessor(train_tokenizer(texts, tmp_path_factory.mktemp("tok"), vocab_size=200, min_frequency=1),
                         max_len=16)  # fmt: skip


def test_overfit_and_evaluate(processor):
    torch.manual_seed(0)
    cfg = with_tokenizer(micro_config(), processor.tokenizer)
    model = BlipNLVR(cfg)
    items = _items()
    size = cfg.vision.image_size
    left = torch.stack([eval_transform(it.images[0], size) for it in items])
    right = torch.stack([eval_transform(it.images[1], size) for it in items])
    ids, mask = processor([it.fields["statement"] for it in items])
    labels = torch.tensor([it.fields["label"] for it in items])
    # an untrained model reports every metric
    m = evaluate_nlvr(model, items, processor, EvalConfig(batch_size=3), torch.device("cpu"))
    assert set(m) == {"nlvr_acc", "nlvr_acc_same", "nlvr_acc_different", "nlvr_n"} and m["nlvr_n"] == 8
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(100):
        loss = model(left, right, ids, mask, labels=labels)["nlvr_loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    m = evaluate_nlvr(model, items, processor, EvalConfig(batch_size=3), torch.device("cpu"))
    assert m["nlvr_acc"] == 1.0 and m["nlvr_acc_same"] == 1.0 and m["nlvr_acc_different"] == 1.0
