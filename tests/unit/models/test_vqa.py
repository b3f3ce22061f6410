"""BlipVQA: shapes, the cross-attention key mask, pre-training state conversion, rank and generate
modes, a tiny over-fit, and evaluate_vqa."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import micro_config, text_batch
from PIL import Image

from blip_core.config.train import EvalConfig
from blip_core.data.task_data import TaskItem
from blip_core.data.transforms import eval_transform
from blip_core.eval.vqa import evaluate_vqa, normalize_answer, vqa_accuracy
from blip_core.models.blip.model import BlipPretrain
from blip_core.models.blip.presets import with_tokenizer
from blip_core.models.blip.vqa import BlipVQA, vqa_state_from_pretrain
from blip_core.models.common.config import VisionConfig
from blip_core.models.common.med import MED
from blip_core.models.common.tokenizer import TextProcessor, train_tokenizer
from blip_core.models.pretrained import load_converted


def _square_cfg():
    """micro_config with vision width == text width (32), as tiny and base have."""
    cfg = micro_config()
    cfg.vision = VisionConfig(image_size=32, patch_size=8, width=32, depth=2, num_heads=4)
    return cfg


def _answers(seed=1):
    ids, mask = text_batch(B=6, L=5, seed=seed)
    mask[2, 3:] = 0
    ids[2, 3:] = 0
    return ids, mask, torch.tensor([0, 0, 1, 2, 3, 3])


def test_forward_shapes_and_finite_loss(cfg):
    model = BlipVQA(cfg)
    q_ids, q_mask = text_batch(B=4)
    a_ids, a_mask, a_index = _answers()
    out = model(torch.randn(4, 3, 32, 32), q_ids, q_mask, a_ids, a_mask, a_index)
    assert out["logits"].shape == (6, 5, cfg.text.vocab_size)
    assert out["vqa_loss"].ndim == 0 and torch.isfinite(out["vqa_loss"])
    out["vqa_loss"].backward()
    assert model.text_encoder.encoder.layer[0].crossattention.self.key.weight.grad is not None
    assert model.visual_encoder.cls_token.grad is not None
    # default weights are 1 / (answers of the question): the same as passing them
    w = torch.tensor([0.5, 0.5, 1.0, 1.0, 0.5, 0.5])
    again = model(torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)), q_ids, q_mask, a_ids,
                  a_mask, a_index, w)  # fmt: skip
    default = model(torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)), q_ids, q_mask, a_ids,
                    a_mask, a_index)  # fmt: skip
    assert torch.allclose(again["vqa_loss"], default["vqa_loss"])


def test_cross_attention_mask_hides_padded_context(cfg):
    """MED's `encoder_attention_mask`: masked context tokens do not matter (folded rows and
    image_index rows), an all-ones mask equals no mask."""
    med = MED(cfg.text, cfg.text.hidden_size, cross_attention=True).eval()
    ids, mask = text_batch(B=4)
    ctx = torch.randn(2, 7, cfg.text.hidden_size)
    ctx_mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0, 0]])
    other = ctx.clone()
    other[0, 5:], other[1, 3:] = 9.0, -9.0  # only padded positions change
    for kw in ({}, {"image_index": torch.tensor([1, 0, 0, 1])}):
        a = med(ids, mask, mode="decoder", image_embeds=ctx, encoder_attention_mask=ctx_mask, **kw)
        b = med(ids, mask, mode="decoder", image_embeds=other, encoder_attention_mask=ctx_mask, **kw)
        assert torch.allclose(a, b, atol=1e-6)
        c = med(ids, mask, mode="decoder", image_embeds=other, **kw)
        assert not torch.allclose(a, c, atol=1e-4)  # without the mask the padding is attended to
    full = torch.ones(2, 7, dtype=torch.long)
    assert torch.equal(med(ids, mask, mode="multimodal", image_embeds=ctx, encoder_attention_mask=full),
                       med(ids, mask, mode="multimodal", image_embeds=ctx))  # fmt: skip


def test_pretrain_state_loads_and_decoder_is_the_pretrain_decoder():
    cfg = _square_cfg()
    pre = BlipPretrain(cfg).eval()
    vqa = BlipVQA(cfg).eval()
    assert load_converted(vqa, pre.state_dict()) == ()
    ids, mask = text_batch(B=4)
    ctx = torch.randn(4, 17, 32)
    with torch.no_grad():
        # the decoder computes what the pre-trained decoder computes (attention_dec, shared rest, LM head)
        dec = vqa.text_decoder.logits(vqa.text_decoder(ids, mask, mode="decoder", image_embeds=ctx))
        ref = pre.text.logits(pre.text(ids, mask, mode="decoder", image_embeds=ctx))
        assert torch.allclose(dec, ref, atol=1e-5)
        enc = vqa.text_encoder(ids, mask, mode="multimodal", image_embeds=ctx)
        assert torch.allclose(enc, pre.text(ids, mask, mode="multimodal", image_embeds=ctx), atol=1e-5)
    pl, vl = pre.text.encoder.layer[1], vqa.text_decoder.encoder.layer[1]
    assert torch.equal(vl.attention.self.query.weight, pl.attention_dec.self.query.weight)
    assert torch.equal(vl.crossattention.self.key.weight, pl.crossattention.self.key.weight)
    assert torch.equal(vqa.text_decoder.lm_head.bias, pre.text.lm_head.bias)


def test_pretrain_state_with_wider_vision_leaves_decoder_kv_fresh(cfg):
    """Vision width 48 != text width 32 (the `large` case): the decoder's cross-attention keys/values
    read question states, so they cannot come from the image cross-attention."""
    state = BlipPretrain(cfg).state_dict()
    converted, fresh = vqa_state_from_pretrain(state)
    assert len(fresh) == 2 * 2 * cfg.text.num_layers  # key/value x weight/bias x layers
    assert all(".crossattention.self.key." in k or ".crossattention.self.value." in k for k in fresh)
    assert not any(k.startswith(("text_m.", "visual_encoder_m.", "itm_head", "vision_proj")) for k in converted)
    assert load_converted(BlipVQA(cfg), state) == fresh
    with pytest.raises(ValueError, match="not a BlipPretrain state"):
        vqa_state_from_pretrain({k: v for k, v in state.items() if ".attention_dec." not in k})


def test_greedy_generation_matches_full_recompute(cfg):
    """Generation through the KV cache keeps the question mask: it equals argmax decoding recomputed
    from scratch at every step."""
    model = BlipVQA(cfg).eval()
    images = torch.randn(4, 3, 32, 32)
    q_ids, q_mask = text_batch(B=4)
    seqs = model.generate_answers(images, q_ids, q_mask, max_length=6, num_beams=1)
    with torch.no_grad():
        states = model.encode_questions(images, q_ids, q_mask)
        ids = torch.full((4, 1), cfg.text.bos_token_id)
        for _ in range(5):
            h = model.answer_hidden(ids, torch.ones_like(ids), states, q_mask)
            ids = torch.cat([ids, model.text_decoder.logits(h)[:, -1].argmax(-1, keepdim=True)], dim=1)
    sep = cfg.text.sep_token_id
    for row, ref in zip(seqs.tolist(), ids.tolist()):
        n = ref.index(sep) + 1 if sep in ref else len(ref)
        assert row[:n] == ref[:n]
    assert model.generate_answers(images, q_ids, q_mask, max_length=6).shape[0] == 4  # beam search


def test_vqa_accuracy():
    assert normalize_answer("The Red, car!") == "red car"
    assert vqa_accuracy("red", ["red"] * 2 + ["blue"] * 8) == pytest.approx(2 / 3)
    assert vqa_accuracy("a red", ["red"] * 4 + ["blue"] * 6) == 1.0
    assert vqa_accuracy("red", ["red", "blue"], "blue") == 0.0
    assert vqa_accuracy("red", ["red"]) == 1.0


# ---- a tiny world: coloured squares, questions about them ------------------------------------------------

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30),
          "purple": (140, 30, 160), "black": (10, 10, 10)}  # fmt: skip


def _items() -> list[TaskItem]:
    items = []
    for i, (name, rgb) in enumerate(COLORS.items()):
        # 10 human answers, a few of them wrong (VQA v2 style): the majority is the colour
        answers = [name] * 8 + [list(COLORS)[(i + 1) % 6]] * 2
        items.append(TaskItem(f"c{i}", [Image.new("RGB", (32, 32), rgb)],
                              {"question": "what color is the square?", "answers": answers, "answer": name,
                               "type": "other"}))  # fmt: skip
    for i, (name, ans) in enumerate([("red", "yes"), ("blue", "no"), ("black", "dark square")]):
        q = "is the square red?" if i < 2 else "what is it?"
        items.append(TaskItem(f"y{i}", [Image.new("RGB", (32, 32), COLORS[name])],
                              {"question": q, "answers": [ans], "answer": ans,
                               "type": "yes/no" if i < 2 else "other"}))  # fmt: skip
    return items


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    words = [it.fields["question"] for it in _items()] + [a for it in _items() for a in it.fields["answers"]]
    tok = train_tokenizer(words + ["a picture of"], tmp_path_factory.mktemp("tok"), vocab_size=200, min_frequency=1)
    return TextProcessor(tok, max_len=16)


def _vqa_batch(items, processor, image_size):
    """BLIP's VQA collate: each question's distinct answers, weighted by their share of its answers."""
    images = torch.stack([eval_transform(it.images[0], image_size) for it in items])
    q_ids, q_mask = processor([it.fields["question"] for it in items])
    answers, index, weight = [], [], []
    for b, it in enumerate(items):
        gts = it.fields["answers"]
        for a in sorted(set(gts)):
            answers.append(a)
            index.append(b)
            weight.append(gts.count(a) / len(gts))
    a_ids, a_mask = processor(answers)
    return images, q_ids, q_mask, a_ids, a_mask, torch.tensor(index), torch.tensor(weight)


@pytest.fixture(scope="module")
def trained(processor):
    torch.manual_seed(0)
    cfg = with_tokenizer(micro_config(), processor.tokenizer)
    model = BlipVQA(cfg)
    items = _items()
    batch = _vqa_batch(items, processor, cfg.vision.image_size)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(150):
        loss = model(*batch)["vqa_loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), items, batch


def test_overfit_then_rank_and_generate(trained, processor):
    model, items, (images, q_ids, q_mask, *_) = trained
    candidates = sorted({it.fields["answer"] for it in items} | {"dark blue"})
    c_ids, c_mask = processor(candidates)
    expected = [candidates.index(it.fields["answer"]) for it in items]
    for k in (2, len(candidates)):  # shortlist by first token, then full likelihood; or score all
        assert model.rank_answers(images, q_ids, q_mask, c_ids, c_mask, k=k).tolist() == expected
    seqs = model.generate_answers(images, q_ids, q_mask, max_length=6)
    texts = processor.tokenizer.batch_decode(seqs.tolist(), skip_special_tokens=True)
    assert texts == [it.fields["answer"] for it in items]


def test_evaluate_vqa_metrics(trained, processor):
    model, items, _ = trained
    cfg = EvalConfig(batch_size=4, k_test=3, num_beams=2, max_length=6)
    m = evaluate_vqa(model, items, processor, cfg, torch.device("cpu"))
    assert m["vqa_n"] == len(items)
    for mode in ("rank", "generate"):
        assert m[f"vqa_acc_{mode}"] == pytest.approx(1.0)  # the majority answer scores 8/3 -> 1
        assert m[f"vqa_acc_{mode}_yes_no"] == pytest.approx(1.0) and f"vqa_acc_{mode}_other" in m
    # an untrained model still reports every metric, in [0, 1]
    fresh = BlipVQA(model.cfg)
    m = evaluate_vqa(fresh, items[:3], processor, cfg, torch.device("cpu"), answer_list=["red", "blue"])
    assert set(m) == {"vqa_n", "vqa_n_unscored", "vqa_acc_rank", "vqa_acc_generate", "vqa_acc_rank_other",
                      "vqa_acc_generate_other"}  # fmt: skip
    # questions without ground truth (VQA v2 test-dev) are answered, not scored
    unanswered = [dataclasses.replace(it, fields=it.fields | {"answers": [], "answer": ""}) for it in items[:2]]
    m = evaluate_vqa(fresh, unanswered + items[2:3], processor, cfg, torch.device("cpu"), answer_list=["red", "blue"])
    assert m["vqa_n"] == 3 and m["vqa_n_unscored"] == 2
    assert all(0.0 <= v <= 1.0 for k, v in m.items() if not k.startswith("vqa_n"))
