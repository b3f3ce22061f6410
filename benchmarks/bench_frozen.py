"""Work a frozen tower and the evaluation no longer do twice, against doing it, in one process.

1. Frozen features (`TrainConfig.frozen_features_mb`): fine-tuning steps (forward + backward + AdamW)
   of the `tiny` filter, its tower frozen, over 3 epochs of 5 captions per image, with the tower's
   output looked up after its first forward per image (also by the momentum copy) against running
   the tower for every caption of every step; images/s of the whole 3 epochs.
2. ITM re-ranking in retrieval evaluation (`blip_core.eval.retrieval.rank_pairs`): each candidate
   pair scored once, in chunks of like text lengths, against a pass that scores every pair of both
   directions' top k padded to the longest text (the recall figures come out the same; the scores
   are checked equal here).

Random-init weights (no download), fp32. Usage:
    python benchmarks/bench_frozen.py [--images 96] [--epochs 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import figure, save

from blip_core.config.train import EvalConfig
from blip_core.eval.retrieval import itc_similarity, rank_pairs
from blip_core.models.blip.model import BlipRetrieval
from blip_core.models.blip.presets import get_preset
from blip_core.models.common.feature_cache import FeatureCache, attach


def tiny_filter() -> BlipRetrieval:
    torch.manual_seed(0)
    model = BlipRetrieval(get_preset("tiny"))
    for tower in (model.visual_encoder, model.visual_encoder_m):
        tower.requires_grad_(False)
    return model


def captions(n_images: int, per_image: int, cfg, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_images * per_image, L) token ids of lengths 8-20, [CLS] first, right-padded."""
    g = torch.Generator().manual_seed(seed)
    t = cfg.text
    n = n_images * per_image
    ids = torch.randint(1000 % t.vocab_size, t.vocab_size, (n, 20), generator=g)
    ids[:, 0] = t.cls_token_id
    lengths = torch.randint(8, 21, (n,), generator=g)
    mask = (torch.arange(20)[None] < lengths[:, None]).long()
    return ids.masked_fill(mask == 0, t.pad_token_id), mask


def finetune_epochs(model: BlipRetrieval, images, ids, mask, epochs: int, batch: int, cached: bool) -> float:
    """Seconds for `epochs` passes of shuffled (image, caption) pairs, the tower frozen in eval mode."""
    per_image = ids.shape[0] // images.shape[0]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model.train()
    for tower in (model.visual_encoder, model.visual_encoder_m):
        tower.eval()
    cache = FeatureCache(2**30) if cached else None
    for tower in (model.visual_encoder, model.visual_encoder_m):  # equal weights: one cache, as the trainer does
        attach(tower, cache)
    start = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(ids.shape[0], generator=torch.Generator().manual_seed(epoch))
        for s in range(0, len(order) - batch + 1, batch):
            rows = order[s : s + batch]
            out = model(images[rows // per_image], ids[rows], mask[rows], rows // per_image)
            loss = out["itc_loss"] + out["itm_loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - start
    for tower in (model.visual_encoder, model.visual_encoder_m):
        attach(tower, None)
    return seconds


class IdsProcessor:
    """Texts are token ids written as strings: `rank_pairs` tokenizes through this."""

    def __init__(self, pad: int) -> None:
        self.tokenizer = type("Tok", (), {"pad_token_id": pad})()

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [[int(x) for x in t.split()] for t in texts]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, row in enumerate(rows):
            ids[r, : len(row)], mask[r, : len(row)] = torch.tensor(row), 1
        return ids, mask


def every_pair_rerank(model, images, ids, mask, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: ITM for every pair of both directions' top k, padded to the longest text."""
    with torch.no_grad():
        emb = model.image_embeds(images)
        sims = itc_similarity(model.image_feat(emb), model.text_feat(ids, mask))
        score_i2t = torch.full(sims.shape, -100.0)
        score_t2i = torch.full(sims.T.shape, -100.0)
        pairs = [(i, int(t), "i2t") for i in range(sims.shape[0]) for t in sims[i].topk(k).indices]
        pairs += [(int(i), t, "t2i") for t in range(sims.shape[1]) for i in sims[:, t].topk(k).indices]
        for c in range(0, len(pairs), 256):
            chunk = pairs[c : c + 256]
            img = torch.tensor([i for i, _, _ in chunk])
            txt = torch.tensor([t for _, t, _ in chunk])
            logits = model.itm_logits(emb[img], ids[txt], mask[txt])[:, 1]
            for r, (i, t, d) in enumerate(chunk):
                if d == "i2t":
                    score_i2t[i, t] = logits[r] + sims[i, t]
                else:
                    score_t2i[t, i] = logits[r] + sims[i, t]
    return score_i2t, score_t2i


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here (benchmarks/report.py)")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = tiny_filter()
    cfg = model.cfg
    S = cfg.vision.image_size
    images = torch.randn(args.images, 3, S, S)
    ids, mask = captions(args.images, 5, cfg)
    pairs = args.epochs * (ids.shape[0] // args.batch) * args.batch
    best = {False: float("inf"), True: float("inf")}
    for _ in range(args.repeats):  # alternating, best of each
        for cached in (False, True):
            best[cached] = min(best[cached], finetune_epochs(model, images, ids, mask, args.epochs, args.batch, cached))
    ratio = best[False] / best[True]
    print(f"frozen-tower fine-tune, {args.epochs} epochs: {pairs / best[False]:.0f} pairs/s running the tower, "
          f"{pairs / best[True]:.0f} with frozen features ({ratio:.2f}x)")  # fmt: skip
    figs = [figure(f"frozen-tower fine-tune (tiny filter, {args.epochs} epochs, 5 captions per image)",
                   round(pairs / best[True]), "pairs/s", ratio=round(ratio, 2),
                   reference=f"the tower run every step, {pairs / best[False]:.0f} pairs/s",
                   goal="epochs after the first run no vision forward")]  # fmt: skip

    model.eval()
    n_img, k = 100, 16
    images = torch.randn(n_img, 3, S, S)
    ids, mask = captions(n_img, 5, cfg, seed=1)
    texts = [[" ".join(map(str, ids[i * 5 + j][: int(mask[i * 5 + j].sum())].tolist())) for j in range(5)]
             for i in range(n_img)]  # fmt: skip

    def encode(s: int, e: int):
        emb = model.image_embeds(images[s:e])
        return model.image_feat(emb), emb

    ecfg = EvalConfig(k_test=k, batch_size=64)
    times = {"ours": float("inf"), "every": float("inf")}
    for _ in range(args.repeats):
        t = time.perf_counter()
        with torch.no_grad():
            ours = rank_pairs(model, texts, encode, IdsProcessor(cfg.text.pad_token_id), ecfg, torch.device("cpu"))
        times["ours"] = min(times["ours"], time.perf_counter() - t)
        t = time.perf_counter()
        ref = every_pair_rerank(model, images, ids, mask, k)
        times["every"] = min(times["every"], time.perf_counter() - t)
    same = torch.allclose(torch.from_numpy(ours[0]), ref[0], atol=1e-4) and torch.allclose(
        torch.from_numpy(ours[1]), ref[1], atol=1e-4
    )
    r = times["every"] / times["ours"]
    print(f"ITC top {k} + ITM re-rank, {n_img} images x 5 captions: {times['ours']:.2f} s vs {times['every']:.2f} s "
          f"scoring every pair ({r:.2f}x); scores equal: {same}")  # fmt: skip
    figs.append(figure(f"retrieval evaluation, ITC top {k} re-ranked by ITM ({n_img} images x 5 captions)",
                       round(times["ours"], 2), "s", ratio=round(r, 2),
                       reference=f"every pair of both directions, padded to the longest text, {times['every']:.2f} s",
                       goal="the same scores", met=same))  # fmt: skip
    save(args.json, figs)


if __name__ == "__main__":
    main()
