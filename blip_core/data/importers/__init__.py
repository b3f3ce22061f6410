"""Importers of real data from local paths into our shard formats.

- `common`: what every importer shares (the import report, the size-guarded json loader, sample
  keys, the rejected-records file);
- `pairs`: image-caption data (COCO, Karpathy, BLIP json, img2dataset folders) -> caption shards;
- `task_items`: what the task importers share (image encoding, field checks, the task-item writer);
- `vqa`: VQA v2 and BLIP's VQA json -> `vqa` task items;
- `nlvr`: NLVR2 and BLIP's NLVR json -> `nlvr` task items.
"""
