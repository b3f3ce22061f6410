"""Zero-shot text-to-video retrieval (BLIP Sec. 5.6): the image-text retrieval model, no video training.

As BLIP's `eval_retrieval_video.py`: the frames of a clip go through the image encoder one by one;
for ITC their projected [CLS] features are averaged (then normalised), for the ITM re-ranking the
frames' token embeddings are concatenated into one sequence that the text cross-attends to.
Recall@1/5/10 in both directions (text->video `ir_*`, video->text `tr_*`), as for images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from blip_core.config.train import EvalConfig
from blip_core.data.transforms import eval_transform
from blip_core.eval.retrieval import rank_pairs, recall_metrics


@torch.no_grad()
def evaluate_video_retrieval(model, items: Sequence, processor, cfg: EvalConfig, device: torch.device) -> dict:
    """`items`: video clips (blip_core.data.task_data.TaskItem: `images` = the frames in order,
    `fields["captions"]` = what happens). Returns the recall metrics and `video_frames`."""
    if not items:
        raise ValueError("no video clips to evaluate")
    frames = {len(it.images) for it in items}
    if len(frames) != 1:  # frame counts differ: BLIP samples a fixed number per video
        raise ValueError(f"video clips must have one frame count, got {sorted(frames)}")
    (T,) = frames
    size = model.cfg.vision.image_size
    clips = torch.stack([torch.stack([eval_transform(f, size) for f in it.images]) for it in items])  # (V, T, 3, S, S)

    def encode(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        b = stop - start
        emb = model.image_embeds(clips[start:stop].flatten(0, 1).to(device))  # (b*T, N, Dv)
        feat = F.normalize(model.image_feat(emb).view(b, T, -1).mean(1), dim=-1)  # (b, E): frames averaged
        return feat, emb.reshape(b, T * emb.shape[1], emb.shape[2])  # (b, T*N, Dv): frames concatenated

    captions = [list(it.fields["captions"]) for it in items]
    metrics = recall_metrics(*rank_pairs(model, captions, encode, processor, cfg, device))
    metrics["chance_ir_r1"] = 100.0 / len(items)
    metrics["video_frames"] = float(T)
    return metrics
