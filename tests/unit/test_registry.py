"""The registry's families and what a task says of itself: which kinds it starts from, whether it
keeps a queue, its registered name; decoding and the trainer reach models only through small
protocols (generate's TextDecoder, `vision_towers`)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from blip_core.models import pretrained
from blip_core.models.blip.presets import get_preset
from blip_core.models.common.generate import GenerationConfig, generate
from blip_core.models.common.vision import vision_tower_names
from blip_core.registry import get_family, get_task, task_for_role, tasks
from blip_core.train.optim import param_groups


def test_families_and_tasks_load_on_first_lookup():
    assert set(tasks()) >= {"vision", "pretrain", "caption", "retrieval", "vqa", "nlvr", "video"}
    blip = get_family("blip")
    assert get_task("caption").config_class is get_task("vqa").config_class  # one family, one config class
    assert blip.call("preset", "tiny").vision.stem == "conv"
    with pytest.raises(ValueError, match="unknown model family 'blip9'"):
        get_family("blip9")


def test_init_from_queue_and_registered_names():
    assert set(get_task("caption").init_from) == {"pretrain"} and get_task("pretrain").init_from == {}
    assert get_task("pretrain").queue and get_task("retrieval").queue and not get_task("caption").queue
    assert get_task("retrieval").itm and not get_task("vqa").itm
    assert task_for_role("filter").name == "retrieval" and task_for_role("captioner").name == "caption"
    assert get_task("retrieval").registered_name() == "blip-filter"
    assert get_task("pretrain").registered_name() == "blip-pretrain"
    with pytest.raises(ValueError, match="0 registered tasks have role 'nope'"):
        task_for_role("nope")


def test_a_checkpoint_becomes_only_a_kind_that_starts_from_it(tmp_path):
    cfg = get_preset("tiny")
    pretrained.save_pretrained(pretrained.create_model("captioner", cfg), tmp_path / "cap")
    with pytest.raises(ValueError, match="cannot turn a captioner checkpoint into a retrieval"):
        pretrained.load_pretrained(tmp_path / "cap", kind="retrieval")
    pretrained.save_pretrained(pretrained.create_model("pretrain", cfg), tmp_path / "pre")
    assert type(pretrained.load_pretrained(tmp_path / "pre", kind="retrieval")).__name__ == "BlipRetrieval"
    kind, read = pretrained.read_config(tmp_path / "pre")
    assert kind == "pretrain" and type(read) is get_task("pretrain").config_class


class CountingDecoder:
    """Not a BLIP model: the protocol alone. Says token 7 three times, then [SEP]."""

    def __init__(self, cfg) -> None:
        self.cfg, self.steps = cfg, 0

    def decoder_cache(self):
        return self  # nothing cached: it needs no past

    def reorder(self, rows) -> None:  # beam search follows its beams through the cache
        pass

    def next_token_logits(self, ids, context, cache):
        self.steps += 1
        logits = torch.full((ids.shape[0], self.cfg.text.vocab_size), -1e4)
        logits[:, 7 if self.steps <= 3 else self.cfg.text.sep_token_id] = 0.0
        return logits


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_generate_needs_only_the_text_decoder_protocol(method):
    cfg = get_preset("tiny")
    dec = CountingDecoder(cfg)
    prompt = torch.tensor([cfg.text.bos_token_id, 5])
    out = generate(dec, torch.zeros(2, 4, 8), prompt, GenerationConfig(method=method, num_beams=2, min_length=0))
    assert out.shape[0] == 2
    assert out[0].tolist() == [cfg.text.bos_token_id, 5, 7, 7, 7, cfg.text.sep_token_id]


def test_vision_towers_are_what_the_model_names():
    model = pretrained.create_model("pretrain", get_preset("tiny"))
    assert vision_tower_names(model) == ("visual_encoder", "visual_encoder_m")
    slow = param_groups(model, 0.05, vision_scale=0.1)
    assert {g["lr_scale"] for g in slow} >= {1.0, 0.1}  # the named tower is slowed, the rest is not

    class NoTower(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.visual_encoder = nn.Linear(2, 2)  # the attribute name alone means nothing

    assert vision_tower_names(NoTower()) == ()
    assert {g["lr_scale"] for g in param_groups(NoTower(), 0.05, vision_scale=0.1)} == {1.0}


def test_blip2_is_a_family_whose_qformer_starts_from_blips_pretraining(tmp_path):
    """A Q-Former from a BLIP pre-training checkpoint: the config from BLIP's (`config_from`), the
    Q-Former's layers from BLIP's text encoder (its bidirectional self-attention, the cross-attention
    of every `cross_attention_freq`-th layer, the feed-forward twice: text and queries), fresh queries."""
    from blip_core.config.train import TrainConfig

    assert get_task("qformer").family == "blip2" and get_task("qformer").frozen_vision
    assert get_family("blip2").call("preset", "tiny").num_query_tokens == 8
    pre = pretrained.create_model("pretrain", get_preset("tiny"))
    pretrained.save_pretrained(pre, tmp_path / "pre")
    q = pretrained.load_pretrained(tmp_path / "pre", kind="qformer")
    assert type(q).__name__ == "Blip2QFormer" and q.cfg.qformer.hidden_size == pre.cfg.text.hidden_size
    src, dst = pre.text.encoder.layer, q.qformer.encoder.layer
    assert torch.equal(dst[1].attention.self.query.weight, src[1].attention.self.query.weight)  # not attention_dec
    assert torch.equal(dst[2].crossattention.self.key.weight, src[2].crossattention.self.key.weight)
    assert dst[1].crossattention is None  # cross_attention_freq 2: layers 0 and 2 only
    assert torch.equal(dst[3].output_query.dense.weight, src[3].output.dense.weight)
    assert torch.equal(q.lm_head.transform.dense.weight, pre.text.lm_head.transform.dense.weight)
    assert not any(p.requires_grad for p in q.visual_encoder.parameters())
    with pytest.raises(ValueError, match="vision_lr_scale must be 0 for qformer"):
        TrainConfig(task="qformer", vision_lr_scale=0.1)
    with pytest.raises(ValueError, match="cannot turn a qformer checkpoint into a captioner"):
        pretrained.save_pretrained(q, tmp_path / "q")
        pretrained.load_pretrained(tmp_path / "q", kind="captioner")


def test_a_conversion_is_named_per_source_kind():
    with pytest.raises(ValueError, match="task caption cannot start from a retrieval checkpoint"):
        get_task("caption").convert("retrieval", {})
    with pytest.raises(ValueError, match="needs the Q-Former's config"):
        get_task("qformer").convert("pretrain", {})  # every conversion takes (state, cfg); a Q-Former needs its cfg
