"""BLIP's three objectives, each returning `{"<name>_loss": tensor}`.

References: BLIP paper Sec. 3.2; salesforce/BLIP models/blip_pretrain.py and blip_retrieval.py.

Deliberate difference from salesforce/BLIP pre-training: ITC targets and ITM negatives are
*same-image aware*. BLIP pre-training marks only the diagonal as positive, which is wrong once a
batch or queue holds several captions of one image (COCO's five, or CapFilt's web + synthetic
captions): those become false negatives. We use image ids, as BLIP's retrieval fine-tuning does
(`sim_targets = eq(idx, idx_all)`), in both pre-training and fine-tuning.

Shapes: B batch, Q queue length, E embed dim, V vocab.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from blip_core.distributed import world_info


def itc_targets(image_ids: torch.Tensor, image_ids_all: torch.Tensor) -> torch.Tensor:
    """(B,), (B+Q,) -> (B, B+Q): uniform distribution over every entry of the same image."""
    pos = (image_ids[:, None] == image_ids_all[None, :]).float()
    return pos / pos.sum(dim=1, keepdim=True)


def itc_loss(
    sim_i2t: torch.Tensor,  # (B, B+Q) image feats . [text feats; text queue] / temp
    sim_t2i: torch.Tensor,  # (B, B+Q)
    targets: torch.Tensor,  # (B, B+Q) from itc_targets
    sim_i2t_m: torch.Tensor | None = None,  # momentum-encoder similarities, same shapes
    sim_t2i_m: torch.Tensor | None = None,
    alpha: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Image-text contrastive loss with momentum distillation (ALBEF/BLIP):
    targets = alpha * softmax(momentum sims) + (1 - alpha) * same-image targets."""
    t_i2t = t_t2i = targets
    if sim_i2t_m is not None and alpha > 0:
        t_i2t = alpha * F.softmax(sim_i2t_m, dim=1) + (1 - alpha) * targets
        t_t2i = alpha * F.softmax(sim_t2i_m, dim=1) + (1 - alpha) * targets
    loss_i2t = -(F.log_softmax(sim_i2t, dim=1) * t_i2t).sum(dim=1).mean()
    loss_t2i = -(F.log_softmax(sim_t2i, dim=1) * t_t2i).sum(dim=1).mean()
    return {"itc_loss": (loss_i2t + loss_t2i) / 2}


def sample_hard_negatives(
    sim: torch.Tensor,  # (B, B) in-batch similarities, rows = anchors
    same_image: torch.Tensor,  # (B, B) bool, True where row and column show the same image
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every row, draw one in-batch negative with probability softmax(sim) over *other* images.

    Vectorised (one multinomial call). Returns (indices (B,), valid (B,) bool): a row whose every
    column shows its own image has no valid negative; it gets index 0 and valid=False, and callers
    drop it instead of training on a false negative.
    """
    weights = F.softmax(sim.float(), dim=1) + 1e-4  # + 1e-4 as BLIP: no weight is exactly zero
    weights = weights.masked_fill(same_image, 0.0)
    valid = weights.sum(dim=1) > 0
    weights = torch.where(valid[:, None], weights, torch.ones_like(weights))  # placeholder rows
    idx = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    return torch.where(valid, idx, torch.zeros_like(idx)), valid


def itm_loss(itm_logits: torch.Tensor, itm_labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Binary match / no-match cross-entropy over (positives, hard negatives). (M, 2), (M,)."""
    return {"itm_loss": F.cross_entropy(itm_logits, itm_labels)}


def itm_word_loss(word_logits: torch.Tensor, word_labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """ITM read at every text token: does this word match the image? (M, L, 2), (M, L) with 1 true
    word, 0 false word, -100 unlabelled. Dense where `itm_loss` gives one bit per caption."""
    return {
        "itm_word_loss": F.cross_entropy(word_logits.flatten(0, 1).float(), word_labels.flatten(), ignore_index=-100)
    }


def lm_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.1) -> dict[str, torch.Tensor]:
    """Next-token cross-entropy with label smoothing. logits (B, L, V) predict labels (B, L) shifted
    by one; -100 labels (padding, prompt) are ignored.

    The mean is over the tokens of the *global* batch: under DDP the token count is summed over
    ranks (and multiplied back by the world size, which DDP's gradient averaging divides out), so
    N processes give the same gradients as one process with the same global batch even when the
    ranks hold different numbers of tokens.
    """
    shifted = logits[:, :-1].reshape(-1, logits.shape[-1])  # (B*(L-1), V)
    target = labels[:, 1:].reshape(-1)  # (B*(L-1),)
    total = F.cross_entropy(
        shifted.float(), target, ignore_index=-100, label_smoothing=label_smoothing, reduction="sum"
    )
    count = (target != -100).sum()
    world = world_info()[1]
    if world > 1:
        count = count.clone()
        dist.all_reduce(count)
        return {"lm_loss": total * world / count.clamp(min=1)}
    return {"lm_loss": total / count.clamp(min=1)}


def unlikelihood_loss(logits: torch.Tensor, labels: torch.Tensor, negative_ids: torch.Tensor) -> torch.Tensor:
    """Token-level unlikelihood (Welleck et al. 2020, "Neural text generation with unlikelihood
    training") at one token per row: the first position t where `negative_ids` (B, L') leaves the
    trained labels (B, L); -log(1 - p(negative token | shared prefix)) from the logits (B, L, V) at
    t - 1. Rows whose negative never leaves the caption add nothing; the mean is over the others."""
    n = min(labels.shape[1], negative_ids.shape[1])
    lab, neg = labels[:, 1:n], negative_ids[:, 1:n]  # position 0 is [DEC]/[CLS], never trained
    differs = (lab != -100) & (neg != lab)  # (B, n-1)
    has = differs.any(dim=1).float()  # (B,) a masked mean: no branch on data, no host sync
    t = differs.float().argmax(dim=1)  # (B,) first differing position, in the shifted frame
    rows = torch.arange(len(t), device=t.device)
    logp = F.log_softmax(logits[rows, t].float(), dim=-1)  # (B, V): predicts token t + 1 of dec_ids
    p = logp.gather(1, neg[rows, t].unsqueeze(1)).squeeze(1).exp()
    return (-torch.log1p(-p.clamp(max=1 - 1e-6)) * has).sum() / has.sum().clamp(min=1)


def alpha_ramp(step: int, ramp_steps: int, alpha: float) -> float:
    """BLIP ramps the distillation weight linearly over the first epoch (ramp_steps)."""
    if ramp_steps <= 0:
        return alpha
    return alpha * min(1.0, step / ramp_steps)


def vqa_loss(
    logits: torch.Tensor,  # (A, La, V) answer decoder logits
    labels: torch.Tensor,  # (A, La) answer ids, -100 where not predicted
    answer_weight: torch.Tensor,  # (A,) each answer's weight (those of one question sum to 1)
    num_questions: int,
    label_smoothing: float = 0.1,
) -> dict[str, torch.Tensor]:
    """BLIP's VQA answer loss (models/blip_vqa.py): each answer's LM loss summed over its tokens,
    weighted by the answer's weight, summed over answers and divided by the number of questions."""
    A, La, V = logits.shape
    token = F.cross_entropy(
        logits[:, :-1].reshape(-1, V).float(),
        labels[:, 1:].reshape(-1),
        ignore_index=-100,
        label_smoothing=label_smoothing,
        reduction="none",
    ).view(A, La - 1)  # (A, La-1)
    return {"vqa_loss": (answer_weight * token.sum(dim=1)).sum() / max(num_questions, 1)}


def nlvr_loss(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """NLVR² true/false cross-entropy (BLIP models/blip_nlvr.py). (B, 2), (B,) with 1 = true."""
    return {"nlvr_loss": F.cross_entropy(logits.float(), labels.long())}
