"""Training for every registered task: `entry` (config -> model + data -> loop -> checkpoint folder),
`loop` (the trainer; no model code), `optim` (AdamW groups and schedules), `checkpoint` (exact
resume). The DDP helpers that models and loaders use too are `blip_core.distributed`."""
