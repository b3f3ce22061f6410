"""Model families, one folder each, and what they share.

- `common/`: parts every family uses — the vision tower (`vision`), the MED / BERT-style text
  transformer (`med`), the tower configs (`config`), the tokenizer and text processor
  (`tokenizer`), decoding (`generate`), CPU weight packing (`packing`) and the vision start
  (`vision_start`: DeiT / timm weights or the `pretrain_vision` stage's tower).
- `blip/`: BLIP (Li et al., 2022) — its config, presets, models (pre-training, captioner, filter,
  VQA, NLVR², the vision classifier), the trainer's forward adapters, converters from Hugging Face
  and salesforce/BLIP checkpoints, and its registry entries (`tasks`).
- `pretrained`: our checkpoint format for every family (save, load, convert between kinds).

Adding a family (BLIP-2, InstructBLIP) is one folder here with a `tasks.py` that registers it,
named in `blip_core.registry.FAMILY_MODULES`, plus its params.yaml section.
"""
