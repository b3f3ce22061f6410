"""Image-text retrieval evaluation: ITC similarity for all pairs, top-k re-ranked by ITM.

References: BLIP `train_retrieval.py:evaluation` and `itm_eval` (score = ITM match logit + ITC
similarity for the k_test candidates, -100 elsewhere; recall at 1/5/10 in both directions).

Memory-bounded: BLIP keeps every image's token embeddings for the re-ranking; here the candidate
pairs of both directions are grouped by image and scored in one more pass over the images, so only
one batch of image embeddings exists at a time (a 5k-image test set fits on a CPU).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from blip_core.config.train import EvalConfig
from blip_core.data.loader import EvalSplit
from blip_core.eval.composition import itm_composition


@torch.no_grad()
def retrieval_scores(model, split: EvalSplit, processor, cfg: EvalConfig, device: torch.device) -> tuple:
    """Returns (score_i2t (N_img, N_txt), score_t2i (N_txt, N_img), txt2img, img2txt)."""

    def encode(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        emb = model.image_embeds(split.images[start:stop].to(device))  # (b, N, Dv)
        return model.image_feat(emb), emb

    return rank_pairs(model, split.captions, encode, processor, cfg, device)


def itc_similarity(image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
    """(N_img, N_txt) ITC similarities from one feature per image (BLIP: (N_img, E)) or K per image
    (BLIP-2's Q-Former queries: (N_img, K, E), the best-matching query scoring, as BLIP-2's ITC)."""
    if image_feats.dim() == 2:
        return image_feats @ text_feats.T
    return torch.einsum("nke,te->nkt", image_feats, text_feats).amax(dim=1)


@torch.no_grad()
def rank_pairs(model, captions: list[list[str]], encode, processor, cfg: EvalConfig, device: torch.device) -> tuple:
    """ITC for all pairs, the top k re-ranked by ITM, for `len(captions)` visual items (images, or
    video clips) whose features `encode(start, stop)` gives as (ITC features (b, E) or (b, K, E),
    token embeddings the ITM cross-attends to (b, N, Dv)); it is called twice per item, so that only
    one batch of token embeddings exists at a time."""
    model.eval()
    texts = [c for caps in captions for c in caps]
    txt2img = np.array([i for i, caps in enumerate(captions) for _ in caps])
    img2txt = [list(np.nonzero(txt2img == i)[0]) for i in range(len(captions))]
    n_items = len(captions)
    # 1. text features and tokens
    ids_all, mask_all, text_feats = [], [], []
    for s in range(0, len(texts), cfg.batch_size):
        ids, mask = processor(texts[s : s + cfg.batch_size])
        ids_all += list(ids)
        mask_all += list(mask)
        text_feats.append(model.text_feat(ids.to(device), mask.to(device)).float().cpu())
    text_feats = torch.cat(text_feats)
    # 2. image features
    image_feats = []
    for s in tqdm(range(0, n_items, cfg.batch_size), desc="eval itc", leave=False):
        image_feats.append(encode(s, min(s + cfg.batch_size, n_items))[0].float().cpu())
    sims = itc_similarity(torch.cat(image_feats), text_feats)  # (N_img, N_txt)
    n_img, n_txt = sims.shape
    k_i2t, k_t2i = min(cfg.k_test, n_txt), min(cfg.k_test, n_img)
    top_i2t = sims.topk(k_i2t, dim=1)  # per image, candidate texts
    top_t2i = sims.T.topk(k_t2i, dim=1)  # per text, candidate images
    # 3. ITM re-rank: every candidate pair once (a pair in both directions' top k is scored once),
    # grouped by its image
    wanted: list[dict[int, list[str]]] = [{} for _ in range(n_img)]  # image -> {text: directions}
    for i in range(n_img):
        for t in top_i2t.indices[i].tolist():
            wanted[i].setdefault(t, []).append("i2t")
    for t in range(n_txt):
        for i in top_t2i.indices[t].tolist():
            wanted[i].setdefault(t, []).append("t2i")
    score_i2t = torch.full((n_img, n_txt), -100.0)
    score_t2i = torch.full((n_txt, n_img), -100.0)
    lengths = [int(m.sum()) for m in mask_all]
    pad = processor.tokenizer.pad_token_id
    for s in tqdm(range(0, n_img, cfg.batch_size), desc="eval itm", leave=False):
        emb = encode(s, min(s + cfg.batch_size, n_img))[1]
        rows = [(i, t) for i in range(s, min(s + cfg.batch_size, n_img)) for t in wanted[i]]
        rows.sort(key=lambda row: lengths[row[1]])  # chunks of like lengths: little padding
        for c in range(0, len(rows), cfg.batch_size * 4):
            chunk = rows[c : c + cfg.batch_size * 4]
            img_idx = torch.tensor([i - s for i, _ in chunk])
            width = max(lengths[t] for _, t in chunk)  # this chunk's longest text, not the split's
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, (_, t) in enumerate(chunk):
                ids[r, : lengths[t]], mask[r, : lengths[t]] = ids_all[t][: lengths[t]], 1
            logits = model.itm_logits(emb[img_idx.to(device)], ids.to(device), mask.to(device))[:, 1].float().cpu()
            for r, (i, t) in enumerate(chunk):
                for direction in wanted[i][t]:
                    if direction == "i2t":
                        score_i2t[i, t] = logits[r] + sims[i, t]
                    else:
                        score_t2i[t, i] = logits[r] + sims[i, t]
    return score_i2t.numpy(), score_t2i.numpy(), txt2img, img2txt


def recall_metrics(score_i2t: np.ndarray, score_t2i: np.ndarray, txt2img: np.ndarray, img2txt: list) -> dict:
    """BLIP's itm_eval: text retrieval (i2t) ranks the best ground-truth caption of each image;
    image retrieval (t2i) ranks each caption's image. Values in percent."""
    ranks = np.zeros(score_i2t.shape[0])
    for i, scores in enumerate(score_i2t):
        order = np.argsort(scores)[::-1]
        ranks[i] = min(np.where(order == t)[0][0] for t in img2txt[i])
    tr = [100.0 * np.mean(ranks < k) for k in (1, 5, 10)]
    ranks = np.zeros(score_t2i.shape[0])
    for t, scores in enumerate(score_t2i):
        order = np.argsort(scores)[::-1]
        ranks[t] = np.where(order == txt2img[t])[0][0]
    ir = [100.0 * np.mean(ranks < k) for k in (1, 5, 10)]
    out = {"tr_r1": tr[0], "tr_r5": tr[1], "tr_r10": tr[2], "ir_r1": ir[0], "ir_r5": ir[1], "ir_r10": ir[2]}
    out["tr_mean"], out["ir_mean"] = float(np.mean(tr)), float(np.mean(ir))
    out["r_mean"] = (out["tr_mean"] + out["ir_mean"]) / 2
    return {k: float(v) for k, v in out.items()}


def evaluate_retrieval(model, split: EvalSplit, processor, cfg: EvalConfig, device: torch.device) -> dict:
    # binding and relation direction on every image (blip_core.eval.composition); recall on the first n
    composition = itm_composition(model, split, processor, cfg.batch_size, device) if any(split.scenes) else {}
    n = cfg.retrieval_max_images
    if n and len(split.keys) > n:  # the first n images and their captions
        split = EvalSplit(split.keys[:n], split.images[:n], split.captions[:n], split.scenes[:n])
    metrics = recall_metrics(*retrieval_scores(model, split, processor, cfg, device))
    # chance level for reference: a random ranking finds the image among N in the top 1 with p = 1/N
    metrics["chance_ir_r1"] = 100.0 / len(split.images)
    return metrics | composition
