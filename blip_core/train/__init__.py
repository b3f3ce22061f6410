"""Training for every registered task: `entry` (config -> model + data -> loop -> checkpoint folder),
`loop` (the trainer; no model code), `optim` (AdamW groups and schedules), `checkpoint` (exact
resume), `distributed` (DDP helpers that are no-ops in one process)."""
