"""BLIP-2 stage 2 and InstructBLIP (blip_core.models.blip2.model): soft prompts into a frozen
transformers OPT, the loss on the text only, the frozen parts, the instruction in the Q-Former, and
over-fitting captions and answers to 100% greedy generation."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import micro_config, text_batch
from transformers import OPTConfig, OPTForCausalLM

from blip_core.models.blip2.config import Blip2Config
from blip_core.models.blip2.model import Blip2, InstructBlip, load_language_model
from blip_core.models.blip2.qformer import Blip2QFormer

BOS, EOS, PAD, V = 2, 3, 1, 50


def tiny_opt(seed: int = 0) -> OPTForCausalLM:
    """An OPT of odd sizes (hidden 24, projection to the embeddings 16: OPT-350m's layout)."""
    torch.manual_seed(seed)
    cfg = OPTConfig(vocab_size=V, hidden_size=24, word_embed_proj_dim=16, num_hidden_layers=2, ffn_dim=40,
                    num_attention_heads=4, max_position_embeddings=64, pad_token_id=PAD, bos_token_id=BOS,
                    eos_token_id=EOS, do_layer_norm_before=False, dropout=0.1)  # fmt: skip
    return OPTForCausalLM(cfg)


def opt_that_knows(texts: torch.Tensor, seed: int = 0, steps: int = 150) -> OPTForCausalLM:
    """The frozen LM's role: a language model that already writes these texts (B, L) after a context,
    as a pre-trained LM continues what came before. It is trained on [4 context tokens of its row;
    text], so it reads the K = 4 positions before BOS; which text an image (or an instruction) asks
    for is then up to the soft prompts that stand where the context stood."""
    context = torch.arange(texts.shape[0])[:, None] * 4 + torch.arange(4)[None] + 30  # (B, 4) distinct
    seqs = torch.cat([context, texts], dim=1)
    lm = tiny_opt(seed)
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-2)
    lm.train()
    for _ in range(steps):
        loss = lm(input_ids=seqs, labels=seqs).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return lm.eval()


def blip2_cfg() -> Blip2Config:
    m = micro_config()
    text = copy.deepcopy(m.text)
    text.num_layers = 3
    return Blip2Config(vision=m.vision, qformer=text, num_query_tokens=4, embed_dim=16)


def lm_batch(B: int = 3, L: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """BOS, 6 tokens, right padding on row 1."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, V, (B, L), generator=g)
    ids[:, 0] = BOS
    mask = torch.ones_like(ids)
    mask[1, 5:], ids[1, 5:] = 0, PAD
    return ids, mask


def test_soft_prompts_are_the_first_embeddings_and_the_loss_covers_the_text_only():
    torch.manual_seed(0)
    model = Blip2(blip2_cfg(), tiny_opt()).eval()
    images = torch.randn(3, 3, 32, 32)
    ids, mask = lm_batch()
    out = model(images, ids, mask, prompt_length=2)
    assert out["lm_logits"].shape == (3, 7, V) and model.language_projection.out_features == 16
    # by hand: the OPT over [soft prompts; token embeddings], scored on tokens 2.. of the unpadded text
    with torch.no_grad():
        soft = model.soft_prompts(images)  # (B, K, 16)
        emb = torch.cat([soft, model.language_model.get_input_embeddings()(ids)], dim=1)
        logits = model.language_model(inputs_embeds=emb, attention_mask=torch.cat([torch.ones(3, 4), mask], 1)).logits
    K = 4
    picked, targets = [], []
    for b in range(3):
        for j in range(2, int(mask[b].sum())):
            picked.append(logits[b, K - 1 + j])
            targets.append(ids[b, j])
    ref = torch.nn.functional.cross_entropy(torch.stack(picked), torch.stack(targets))
    assert torch.allclose(out["lm_loss"], ref, atol=1e-5) and torch.equal(out["loss"], out["lm_loss"])
    # per-row prompt lengths: a longer prompt on row 0 drops its tokens from the loss
    per_row = model(images, ids, mask, prompt_length=torch.tensor([4, 2, 2]))["lm_loss"]
    assert not torch.allclose(per_row, out["lm_loss"])
    # the text never reaches the queries: the soft prompts do not depend on it
    with torch.no_grad():
        assert torch.equal(model.soft_prompts(images), soft)


def test_frozen_tower_and_language_model_get_no_gradient_and_do_not_change():
    torch.manual_seed(0)
    model = Blip2(blip2_cfg(), tiny_opt()).train()
    assert not model.visual_encoder.training and not model.language_model.training  # dropout off in the LM
    frozen = {n: t.clone() for n, t in model.state_dict().items() if n.startswith(("visual_encoder", "language_model"))}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids, mask = lm_batch()
    model(torch.randn(3, 3, 32, 32), ids, mask, prompt_length=1)["loss"].backward()
    opt.step()
    params = dict(model.named_parameters())
    assert all(p.grad is None for n, p in params.items() if n.startswith(("visual_encoder", "language_model")))
    for name in ("query_tokens", "ln_vision.weight", "language_projection.weight",
                 "qformer.encoder.layer.0.crossattention.self.query.weight",
                 "qformer.encoder.layer.2.intermediate_query.dense.weight"):  # fmt: skip
        assert params[name].grad is not None, name
    assert all(torch.equal(model.state_dict()[n], t) for n, t in frozen.items())
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {
        "ln_vision", "query_tokens", "qformer", "language_projection"}  # fmt: skip


def test_stage_two_starts_from_stage_one():
    torch.manual_seed(0)
    stage1 = Blip2QFormer(blip2_cfg())
    model = Blip2.from_stage1(stage1, tiny_opt())
    for name in ("visual_encoder", "ln_vision", "qformer"):
        a, b = getattr(stage1, name).state_dict(), getattr(model, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert torch.equal(model.query_tokens, stage1.query_tokens)


def _overfit(model, images, ids, mask, prompt_length, steps, **qtext) -> None:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(images, ids, mask, prompt_length=prompt_length, **qtext)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def test_stage_two_overfits_captions_to_exact_greedy_generation():
    """4 images, a one-token prompt, 5 caption tokens + EOS each: the frozen OPT writes each caption
    exactly when only the Q-Former side trains."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(5)
    captions = torch.randint(4, V, (4, 5), generator=g)
    prompt = torch.full((4, 1), 7)  # "a photo of", one token here
    ids = torch.cat([torch.full((4, 1), BOS), prompt, captions, torch.full((4, 1), EOS)], dim=1)
    model = Blip2(blip2_cfg(), opt_that_knows(ids, seed=1))
    images = torch.randn(4, 3, 32, 32)
    _overfit(model, images, ids, torch.ones_like(ids), 2, steps=250)
    prefix = ids[:, :2]
    out = model.generate(images, prefix, torch.ones_like(prefix), max_new_tokens=8)
    assert torch.equal(out[:, :6], torch.cat([captions, torch.full((4, 1), EOS)], dim=1))
    beams = model.generate(images, prefix, torch.ones_like(prefix), max_new_tokens=8, num_beams=2)
    assert torch.equal(beams[:, :5], captions)


def test_instructblip_reads_the_instruction_in_the_qformer_and_answers_per_instruction():
    """One image, two instructions, two answers: only an instruction-aware Q-Former tells them apart
    through the queries, since the language model sees the same prompt tokens for both."""
    torch.manual_seed(0)
    image = torch.randn(1, 3, 32, 32).expand(4, -1, -1, -1)  # one image, as (B, ...)
    qids, qmask = text_batch(B=4, L=6, seed=2)
    qmask[:] = 1
    qids[2:] = qids[:2]  # instructions a, b, a, b
    answers = torch.tensor([[11, 12], [21, 22], [11, 12], [21, 22]])
    ids = torch.cat([torch.full((4, 1), BOS), torch.full((4, 1), 7), answers, torch.full((4, 1), EOS)], dim=1)
    model = InstructBlip(blip2_cfg(), opt_that_knows(ids, seed=2))
    qtext = {"qformer_input_ids": qids, "qformer_attention_mask": qmask}
    with torch.no_grad():  # the queries depend on the instruction
        a = model.soft_prompts(image[:2], qformer_input_ids=qids[:2], qformer_attention_mask=qmask[:2])
    assert not torch.allclose(a[0], a[1])
    _overfit(model, image, ids, torch.ones_like(ids), 2, steps=200, **qtext)
    prefix = ids[:, :2]
    out = model.generate(image, prefix, torch.ones_like(prefix), max_new_tokens=4, **qtext)
    assert torch.equal(out[:, :3], torch.cat([answers, torch.full((4, 1), EOS)], dim=1))
    with pytest.raises(TypeError):
        model(image, ids, torch.ones_like(ids), prompt_length=2)  # the instruction is required


def test_a_local_language_model_directory_replaces_the_world_one(tmp_path):
    lm = tiny_opt()
    lm.save_pretrained(tmp_path / "opt")
    loaded = load_language_model(tmp_path / "opt")
    assert isinstance(loaded, OPTForCausalLM)
    assert all(torch.equal(a, b) for a, b in zip(lm.state_dict().values(), loaded.state_dict().values(), strict=True))
    with pytest.raises(FileNotFoundError, match="no model directory"):
        load_language_model(tmp_path / "missing")


def test_prompts_of_different_lengths_generate_as_they_do_alone():
    """Left-padded prompts put padding between the soft prompts and the prompt: OPT's positions count
    attended tokens only, so each row generates what it generates alone."""
    torch.manual_seed(0)
    texts = torch.tensor([[BOS, 7, 8, 9, 11, 12, EOS], [BOS, 9, 21, 22, 23, 24, EOS]])
    model = Blip2(blip2_cfg(), opt_that_knows(texts, seed=3)).eval()
    images = torch.randn(2, 3, 32, 32)
    ids = torch.tensor([[BOS, 7, 8, 9], [PAD, PAD, BOS, 9]])
    mask = (ids != PAD).long()
    both = model.generate(images, ids, mask, max_new_tokens=4)
    for b, n in ((0, 4), (1, 2)):
        alone = model.generate(images[b : b + 1], ids[b : b + 1, -n:], mask[b : b + 1, -n:], max_new_tokens=4)
        assert torch.equal(both[b, : alone.shape[1]], alone[0]) and (both[b, alone.shape[1] :] == PAD).all(), b
