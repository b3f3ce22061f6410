"""BLIP's entries in the registry (blip_core.registry): the family (config, presets, tokenizer,
text processor) and its tasks — the vision start, pre-training, captioner, filter, VQA, NLVR² and
zero-shot video retrieval. References are "module:attr" strings, so that importing the registry
imports no model, data or evaluation code: a pipeline stage depends on the code it runs, not on
every task's."""

from __future__ import annotations

from blip_core.registry import Family, Task, register, register_family

register_family(
    Family(
        name="blip",
        config="blip_core.models.blip.config:ModelConfig",
        preset="blip_core.models.blip.presets:get_preset",
        load_tokenizer="blip_core.models.common.tokenizer:load_tokenizer",
        with_tokenizer="blip_core.models.blip.presets:with_tokenizer",
        processor="blip_core.models.blip.processing:text_processor",
    )
)

register(
    Task(
        name="vision",
        kind="vision",
        family="blip",
        model="blip_core.models.blip.classifier:VisionClassifier",
        section="pretrain_vision",
        data="labels",
        forward="blip_core.models.blip.adapters:vision_forward",
        role="vision",
        registry_metric="val/shape_f1",
        text=False,
        about="supervised vision start, trained on the world's label-only objects split",
    )
)
register(
    Task(
        name="pretrain",
        kind="pretrain",
        family="blip",
        model="blip_core.models.blip.model:BlipPretrain",
        section="pretrain",
        forward="blip_core.models.blip.adapters:itc_itm_forward",
        itm=True,
        queue=True,
        role="pretrain",
        registry_metric="test/probe_shape_f1",
        about="BLIP pre-training (ITC + ITM + LM)",
    )
)
register(
    Task(
        name="caption",
        kind="captioner",
        family="blip",
        model="blip_core.models.blip.model:BlipCaptioner",
        section="finetune_caption",
        forward="blip_core.models.blip.adapters:caption_forward",
        prompt=True,
        load_eval="blip_core.data.loader:load_eval_split",
        evaluate="blip_core.eval.captioning:evaluate_captioning",
        init_from={"pretrain": "blip_core.models.blip.model:captioner_from_pretrain"},
        metrics=("cider", "bleu4", "grounded_true_rate", "grounded_precision"),
        role="captioner",
        registry_metric="test/cider",
        about="captioner (LM) fine-tuned on human captions",
    )
)
register(
    Task(
        name="retrieval",
        kind="retrieval",
        family="blip",
        model="blip_core.models.blip.model:BlipRetrieval",
        section="finetune_retrieval",
        forward="blip_core.models.blip.adapters:itc_itm_forward",
        itm=True,
        queue=True,
        load_eval="blip_core.data.loader:load_eval_split",
        evaluate="blip_core.eval.retrieval:evaluate_retrieval",
        init_from={"pretrain": "blip_core.models.blip.model:retrieval_from_pretrain"},
        metrics=("r_mean", "tr_r1", "ir_r1"),
        role="filter",
        registry_metric="test/r_mean",
        about="filter (ITC + ITM) fine-tuned on human captions",
    )
)
register(
    Task(
        name="vqa",
        kind="vqa",
        family="blip",
        model="blip_core.models.blip.vqa:BlipVQA",
        section="finetune_vqa",
        data="vqa",
        forward="blip_core.models.blip.adapters:vqa_forward",
        train_data="blip_core.data.task_loader:vqa_train_data",
        load_eval="blip_core.data.task_data:load_eval_items",
        evaluate="blip_core.eval.vqa:evaluate_vqa",
        init_from={"pretrain": "blip_core.models.blip.vqa:vqa_state_from_pretrain"},
        metrics=("vqa_acc_rank", "vqa_acc_generate"),
        role="vqa",
        registry_metric="vqa_test/vqa_acc_rank",
        train_split="vqa_train",
        eval_splits=("vqa_test", "vqa_novel"),
        about="VQA model (question encoder + answer decoder) fine-tuned on the world's questions",
    )
)
register(
    Task(
        name="nlvr",
        kind="nlvr",
        family="blip",
        model="blip_core.models.blip.nlvr:BlipNLVR",
        section="finetune_nlvr",
        data="nlvr",
        forward="blip_core.models.blip.adapters:nlvr_forward",
        train_data="blip_core.data.task_loader:nlvr_train_data",
        load_eval="blip_core.data.task_data:load_eval_items",
        evaluate="blip_core.eval.nlvr:evaluate_nlvr",
        init_from={"pretrain": "blip_core.models.blip.nlvr:nlvr_state_from_pretrain"},
        metrics=("nlvr_acc",),
        role="nlvr",
        registry_metric="nlvr_test/nlvr_acc",
        train_split="nlvr_train",
        eval_splits=("nlvr_test", "nlvr_novel"),
        about="NLVR² model (two-image encoder + binary head) fine-tuned on the world's statements",
    )
)
register(
    Task(
        name="video",
        kind="retrieval",
        family="blip",
        data="video",
        load_eval="blip_core.data.task_data:load_eval_items",
        evaluate="blip_core.eval.video:evaluate_video_retrieval",
        metrics=("r_mean", "tr_r1", "ir_r1"),
        eval_splits=("video_test", "video_novel"),
        about="zero-shot text-to-video retrieval with the retrieval model (frame features averaged)",
    )
)
