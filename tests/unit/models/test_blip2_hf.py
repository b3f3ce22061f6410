"""Hugging Face BLIP-2 / InstructBLIP <-> ours (blip_core.models.blip2.convert_hf): tiny random HF
models of odd shapes, built here (no download), give the same logits (<= 1e-4, fp32) and the same
greedy tokens through ours, and ours exported back loads in transformers with the same logits."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    OPTConfig,
)

from blip_core.models.blip2.convert_hf import export_hf, load_hf
from blip_core.models.blip2.model import Blip2, InstructBlip

K, IMAGE_TOKEN, V = 3, 56, 57
VISION = dict(hidden_size=36, intermediate_size=52, num_hidden_layers=2, num_attention_heads=3, image_size=24,
              patch_size=8)  # fmt: skip
QFORMER = dict(hidden_size=30, num_hidden_layers=3, num_attention_heads=3, intermediate_size=44, vocab_size=71,
               encoder_hidden_size=36, cross_attention_frequency=2, max_position_embeddings=40)  # fmt: skip


def _opt() -> dict:
    return OPTConfig(vocab_size=V, hidden_size=20, word_embed_proj_dim=20, num_hidden_layers=2, ffn_dim=36,
                     num_attention_heads=2, max_position_embeddings=48, pad_token_id=1, bos_token_id=2,
                     eos_token_id=3).to_dict()  # fmt: skip


def _hf(instruct: bool):
    torch.manual_seed(0)
    cfg_cls, cls = (InstructBlipConfig, InstructBlipForConditionalGeneration) if instruct else (
        Blip2Config, Blip2ForConditionalGeneration)  # fmt: skip
    cfg = cfg_cls(vision_config=VISION, qformer_config=QFORMER, text_config=_opt(), num_query_tokens=K,
                  image_token_index=IMAGE_TOKEN)  # fmt: skip
    model = cls(cfg).eval()
    with torch.no_grad():  # HF's init leaves some norms at 1/0 and biases at 0: make every weight count
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def _inputs():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 24, 24, generator=g)
    ids = torch.randint(4, IMAGE_TOKEN, (2, 6), generator=g)
    ids[:, 0] = 2
    mask = torch.ones_like(ids)
    mask[1, 4:], ids[1, 4:] = 0, 1
    qids = torch.randint(5, 71, (2, 5), generator=g)
    qmask = torch.ones_like(qids)
    qmask[0, 3:], qids[0, 3:] = 0, 0
    return images, ids, mask, {"qformer_input_ids": qids, "qformer_attention_mask": qmask}


def _hf_logits(hf, images, ids, mask, qtext, instruct):
    full = torch.cat([torch.full((2, K), IMAGE_TOKEN), ids], dim=1)
    fmask = torch.cat([torch.ones(2, K, dtype=torch.long), mask], dim=1)
    kw = qtext if instruct else {}
    with torch.no_grad():
        return hf(pixel_values=images, input_ids=full, attention_mask=fmask, **kw).logits[:, K:]


@pytest.mark.parametrize("instruct", [False, True], ids=["blip2", "instructblip"])
def test_hf_weights_give_the_same_logits_and_greedy_tokens(instruct):
    hf = _hf(instruct)
    ours = load_hf(hf).eval()
    assert isinstance(ours, InstructBlip if instruct else Blip2)
    images, ids, mask, qtext = _inputs()
    kw = qtext if instruct else {}
    with torch.no_grad():
        mine = ours(images, ids, mask, **kw)["lm_logits"]
    theirs = _hf_logits(hf, images, ids, mask, qtext, instruct)
    real = mask.bool()
    assert (mine - theirs).abs()[real].max() <= 1e-4
    prompt = ids[:, :3]
    with torch.no_grad():
        hf_tokens = hf.generate(pixel_values=images, input_ids=torch.cat([torch.full((2, K), IMAGE_TOKEN), prompt], 1),
                                attention_mask=torch.ones(2, K + 3, dtype=torch.long), max_new_tokens=6,
                                min_new_tokens=6, do_sample=False, **kw)[:, K + 3 :]  # fmt: skip
    our_tokens = ours.generate(images, prompt, torch.ones_like(prompt), max_new_tokens=6, min_new_tokens=6, **kw)
    assert torch.equal(our_tokens, hf_tokens)


@pytest.mark.parametrize("instruct", [False, True], ids=["blip2", "instructblip"])
def test_ours_exported_loads_in_transformers_with_the_same_logits(instruct, tmp_path):
    ours = load_hf(_hf(instruct)).eval()
    with torch.no_grad():  # ours trained a little: not the weights it came from
        for p in ours.qformer.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    export_hf(ours, tmp_path / "hf", image_token_index=IMAGE_TOKEN)
    cls = InstructBlipForConditionalGeneration if instruct else Blip2ForConditionalGeneration
    back = cls.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    images, ids, mask, qtext = _inputs()
    with torch.no_grad():
        mine = ours(images, ids, mask, **(qtext if instruct else {}))["lm_logits"]
    theirs = _hf_logits(back, images, ids, mask, qtext, instruct)
    assert (mine - theirs).abs()[mask.bool()].max() <= 1e-4
    again = load_hf(tmp_path / "hf").eval()  # and a local directory comes back in
    with torch.no_grad():
        assert torch.allclose(again(images, ids, mask, **(qtext if instruct else {}))["lm_logits"], mine, atol=1e-5)


def test_only_a_tower_without_its_own_last_norm_exports():
    from helpers import micro_config

    from blip_core.models.blip2.config import Blip2Config as OurConfig

    m = micro_config()
    model = Blip2(OurConfig(vision=m.vision, qformer=m.text, num_query_tokens=2), load_hf(_hf(False)).language_model)
    with pytest.raises(ValueError, match="without a last norm"):
        export_hf(model, "unused", image_token_index=IMAGE_TOKEN)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_hf("/nonexistent")


def _hf_retrieval():
    from transformers import Blip2ForImageTextRetrieval

    torch.manual_seed(0)
    cfg = Blip2Config(vision_config=VISION, qformer_config=QFORMER | {"use_qformer_text_input": True},
                      num_query_tokens=K, image_text_hidden_size=14)  # fmt: skip
    model = Blip2ForImageTextRetrieval(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def _stage1_outputs(model, images, ids, mask):
    """Ours: ITM logits over [queries; text] and the ITC similarity (max over queries, no temperature)."""
    with torch.no_grad():
        emb = model.image_embeds(images)
        itm = model.itm_logits(emb, ids, mask)
        sim = torch.einsum("ike,te->itk", model.image_feats(model.query_pass(emb)[0]), model.text_feat(ids, mask))
    return itm, sim.amax(-1)


def _hf_stage1(hf, images, ids, mask):
    with torch.no_grad():
        itm = hf(pixel_values=images, input_ids=ids, attention_mask=mask, use_image_text_matching_head=True)
        itc = hf(pixel_values=images, input_ids=ids, attention_mask=mask, use_image_text_matching_head=False)
    return itm.logits_per_image, itc.logits_per_image


def test_stage_one_hf_retrieval_model_gives_the_same_itm_and_itc(tmp_path):
    from transformers import Blip2ForImageTextRetrieval

    from blip_core.models.blip2.qformer import Blip2QFormer

    hf = _hf_retrieval()
    ours = load_hf(hf).eval()
    assert isinstance(ours, Blip2QFormer) and ours.cfg.embed_dim == 14
    images, _, _, qtext = _inputs()
    ids, mask = qtext["qformer_input_ids"], qtext["qformer_attention_mask"]
    itm, sim = _stage1_outputs(ours, images, ids, mask)
    hf_itm, hf_sim = _hf_stage1(hf, images, ids, mask)
    assert (itm - hf_itm).abs().max() <= 1e-4 and (sim - hf_sim).abs().max() <= 1e-4
    with torch.no_grad():  # and back, after some training
        for p in ours.qformer.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    export_hf(ours, tmp_path / "itr")
    back = Blip2ForImageTextRetrieval.from_pretrained(tmp_path / "itr", local_files_only=True).eval()
    itm, sim = _stage1_outputs(ours, images, ids, mask)
    hf_itm, hf_sim = _hf_stage1(back, images, ids, mask)
    assert (itm - hf_itm).abs().max() <= 1e-4 and (sim - hf_sim).abs().max() <= 1e-4


def test_blip_convert_takes_a_blip2_retrieval_directory_into_our_format_and_back(tmp_path):
    """`blip convert --from hf` on a Blip2ForImageTextRetrieval directory: our `qformer` checkpoint
    (with the Q-Former's BERT tokenizer), the same ITM / ITC; `--to hf` writes it back."""
    from transformers import BertTokenizerFast, Blip2ForImageTextRetrieval

    from blip_core.models.common.tokenizer import load_tokenizer, train_tokenizer
    from blip_core.models.pretrained import load_pretrained
    from flows.stages.data import stage_convert

    hf = _hf_retrieval()
    hf.save_pretrained(tmp_path / "hf")
    tok_dir = tmp_path / "tok"
    train_tokenizer(["a red circle left of a blue star"] * 5, tok_dir, vocab_size=71, min_frequency=1)
    with pytest.raises(ValueError, match="needs --tokenizer"):
        stage_convert(tmp_path / "hf", tmp_path / "ours", src_format="hf")
    out = stage_convert(tmp_path / "hf", tmp_path / "ours", src_format="hf", tokenizer=tok_dir)
    assert out["kind"] == "qformer"
    ours = load_pretrained(tmp_path / "ours").eval()
    assert ours.cfg.tokenizer == str(tmp_path / "ours" / "tokenizer")  # the tokenizer saved with the checkpoint
    assert len(BertTokenizerFast.from_pretrained(tmp_path / "ours" / "tokenizer")) == len(load_tokenizer(tok_dir))
    images, _, _, qtext = _inputs()
    ids, mask = qtext["qformer_input_ids"], qtext["qformer_attention_mask"]
    itm, sim = _stage1_outputs(ours, images, ids, mask)
    hf_itm, hf_sim = _hf_stage1(hf, images, ids, mask)
    assert (itm - hf_itm).abs().max() <= 1e-4 and (sim - hf_sim).abs().max() <= 1e-4
    stage_convert(tmp_path / "ours", tmp_path / "back", src_format="ours", dst_format="hf")
    back = Blip2ForImageTextRetrieval.from_pretrained(tmp_path / "back", local_files_only=True).eval()
    hf_itm, hf_sim = _hf_stage1(back, images, ids, mask)
    assert (itm - hf_itm).abs().max() <= 1e-4 and (sim - hf_sim).abs().max() <= 1e-4
    stage_convert(tmp_path / "back", tmp_path / "again", src_format="hf")  # the tokenizer travelled with it
    # a stage-2 model holds a language model: not our format yet, said plainly
    _hf(False).save_pretrained(tmp_path / "lm")
    with pytest.raises(ValueError, match="has no checkpoint format of ours yet"):
        stage_convert(tmp_path / "lm", tmp_path / "x", src_format="hf", tokenizer=tok_dir)
