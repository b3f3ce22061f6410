"""Losses on hand-built inputs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from blip_core.losses import alpha_ramp, itc_loss, itc_targets, lm_loss, sample_hard_negatives, unlikelihood_loss


def test_itc_targets_same_image_are_positives():
    ids = torch.tensor([7, 7, 9])
    ids_all = torch.tensor([7, 7, 9, 7, -100, 9])
    t = itc_targets(ids, ids_all)
    assert torch.allclose(t[0], torch.tensor([1 / 3, 1 / 3, 0, 1 / 3, 0, 0]))
    assert torch.allclose(t[2], torch.tensor([0, 0, 0.5, 0, 0, 0.5]))
    assert torch.allclose(t.sum(1), torch.ones(3))


def test_itc_loss_against_hand_computation():
    sim = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.0, 0.0]])
    t = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    # -log softmax at the target column, averaged over rows; i2t and t2i are equal here
    row0 = -(2.0 - math.log(math.exp(2) + math.exp(0) + math.exp(-1)))
    row1 = -(1.0 - math.log(math.exp(0.5) + math.exp(1) + math.exp(0)))
    out = itc_loss(sim, sim, t)["itc_loss"]
    assert abs(out.item() - (row0 + row1) / 2) < 1e-6
    # momentum distillation: alpha mixes in softmax(sim_m)
    sim_m = torch.zeros(2, 3)
    mixed = itc_loss(sim, sim, t, sim_m, sim_m, alpha=0.4)["itc_loss"]
    tgt = 0.4 * torch.full((2, 3), 1 / 3) + 0.6 * t
    ref = -(F.log_softmax(sim, 1) * tgt).sum(1).mean()
    assert torch.allclose(mixed, ref)


def test_hard_negatives_never_same_image_and_follow_similarity():
    ids = torch.tensor([0, 0, 1, 2, 2, 3])
    same = ids[:, None] == ids[None, :]
    sim = torch.randn(6, 6)
    sim[:, 5] += 20.0  # column 5 is by far the most similar (hardest) negative for rows != 5
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        idx, valid = sample_hard_negatives(sim, same, g)
        assert valid.all()
        assert not same[torch.arange(6), idx].any()
    idx, _ = sample_hard_negatives(sim, same, g)
    assert (idx[:5] == 5).all()


def test_rows_without_a_valid_negative_are_flagged():
    ids = torch.tensor([4, 4, 4])  # every caption shows the same image
    idx, valid = sample_hard_negatives(torch.zeros(3, 3), ids[:, None] == ids[None, :])
    assert not valid.any() and idx.shape == (3,)


def test_lm_loss_label_smoothing_and_ignore():
    logits = torch.randn(2, 5, 11)
    labels = torch.randint(0, 11, (2, 5))
    labels[1, 3:] = -100
    got = lm_loss(logits, labels, 0.1)["lm_loss"]
    flat, tgt = logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1)
    keep = tgt != -100
    logp = F.log_softmax(flat[keep], -1)
    nll = -logp.gather(1, tgt[keep, None]).squeeze(1)
    smooth = -logp.mean(-1)
    assert torch.allclose(got, (0.9 * nll + 0.1 * smooth).mean(), atol=1e-6)
    assert not torch.allclose(got, lm_loss(logits, labels, 0.0)["lm_loss"])


def test_alpha_ramp():
    assert alpha_ramp(0, 100, 0.4) == 0.0 and alpha_ramp(50, 100, 0.4) == 0.2 and alpha_ramp(500, 100, 0.4) == 0.4


def test_unlikelihood_scores_the_first_token_where_the_negative_leaves_the_caption():
    logits = torch.randn(3, 6, 10)
    labels = torch.tensor([[-100, -100, 4, 5, 6, 2], [-100, 3, 3, 7, 2, -100], [-100, 1, 2, 2, -100, -100]])
    # row 0 leaves at index 3 (5 -> 9), row 1 at index 4 (2 -> 8: the negative is longer), row 2 never
    negatives = torch.tensor([[1, 1, 4, 9, 6, 2, 0], [1, 3, 3, 7, 8, 8, 2], [1, 1, 2, 2, 0, 0, 0]])
    p0 = F.softmax(logits[0, 2], -1)[9]  # logits at t - 1 predict token t
    p1 = F.softmax(logits[1, 3], -1)[8]
    want = -(torch.log(1 - p0) + torch.log(1 - p1)) / 2
    assert torch.allclose(unlikelihood_loss(logits, labels, negatives), want, atol=1e-6)
    # prompt positions (-100) never count, and a batch without any difference gives 0 with a graph
    same = labels.clamp(min=0)
    none = unlikelihood_loss(logits.requires_grad_(), labels, same)
    assert none.item() == 0.0 and none.requires_grad
