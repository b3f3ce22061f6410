"""BLIP-2's entries in the registry (blip_core.registry): the family (config, presets, tokenizer,
text processor) and its first-stage task, the Q-Former on a frozen tower. References are
"module:attr" strings, as BLIP's (blip_core/models/blip/tasks.py)."""

from __future__ import annotations

from blip_core.registry import Family, Task, register, register_family

register_family(
    Family(
        name="blip2",
        config="blip_core.models.blip2.config:Blip2Config",
        preset="blip_core.models.blip2.presets:get_preset",
        load_tokenizer="blip_core.models.common.tokenizer:load_tokenizer",
        with_tokenizer="blip_core.models.blip2.presets:with_tokenizer",
        processor="blip_core.models.blip2.processing:text_processor",
    )
)

register(
    Task(
        name="qformer",
        kind="qformer",
        family="blip2",
        model="blip_core.models.blip2.qformer:Blip2QFormer",
        section="pretrain_qformer",
        forward="blip_core.models.blip2.adapters:qformer_forward",
        load_eval="blip_core.data.loader:load_eval_split",
        evaluate="blip_core.eval.retrieval:evaluate_retrieval",
        init_from={"pretrain": "blip_core.models.blip2.qformer:qformer_from_pretrain"},
        config_from="blip_core.models.blip2.presets:from_blip",
        metrics=("r_mean", "tr_r1", "ir_r1"),
        role="qformer",
        registry_metric="test/r_mean",
        frozen_vision=True,
        about="BLIP-2 stage 1: a Q-Former (ITC + ITM + ITG) on the frozen tower",
    )
)
