"""VQA evaluation: answers by generation and by ranking a candidate list, VQA accuracy overall and
per question type.

References: BLIP `train_vqa.py:evaluation` (generate mode, and rank mode over the answer list with
k_test candidates) and the VQA v2 accuracy, min(1, #annotators who gave the answer / 3) over 10 human
answers; here it is computed once against all answers, not averaged over the 10 subsets of 9, and
answers are normalised (lower case, punctuation and articles removed) before comparing. Items with
fewer than 3 answers are scored by exact match.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

import torch
from tqdm import tqdm

from blip_core.config.train import EvalConfig
from blip_core.data.task_data import TaskItem
from blip_core.data.transforms import eval_transform

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = {"a", "an", "the"}


def normalize_answer(text: str) -> str:
    """Lower case; punctuation to spaces (so "don't" and the decoded "don ' t" agree); no articles."""
    words = _PUNCT.sub(" ", text.lower()).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def vqa_accuracy(prediction: str, answers: Sequence[str], answer: str | None = None) -> float:
    """min(1, matches / 3) against >= 3 human answers (VQA v2); otherwise exact match with `answer`
    (or with any of `answers` when there is no single one)."""
    pred = normalize_answer(prediction)
    gts = [normalize_answer(a) for a in answers]
    if len(gts) >= 3:
        return min(1.0, sum(g == pred for g in gts) / 3)
    if answer is not None:
        return float(pred == normalize_answer(answer))
    return float(pred in gts)


def metric_suffix(name: str) -> str:
    """A question type as a metric-name suffix ("yes/no" -> "yes_no"; MLflow-safe)."""
    return re.sub(r"\W+", "_", str(name)).strip("_") or "none"


def accuracy_metrics(prefix: str, scores: Sequence[float], types: Sequence[str | None]) -> dict[str, float]:
    """`prefix` = the mean score, and `prefix_<type>` per type of the items that have one."""
    out = {prefix: sum(scores) / max(len(scores), 1)}
    by_type: dict[str, list[float]] = {}
    for s, t in zip(scores, types, strict=True):
        if t is not None:
            by_type.setdefault(metric_suffix(t), []).append(s)
    for t, values in sorted(by_type.items()):
        out[f"{prefix}_{t}"] = sum(values) / len(values)
    return out


def default_answer_list(items: Sequence[TaskItem]) -> list[str]:
    """The sorted set of every answer in the items (the rank mode's candidates)."""
    seen = {a for it in items for a in [*it.fields.get("answers", []), it.fields.get("answer")] if a}
    return sorted(seen)


@torch.no_grad()
def evaluate_vqa(
    model, items: Sequence[TaskItem], processor, cfg: EvalConfig, device: torch.device, *,
    answer_list: Sequence[str] | None = None,
) -> dict[str, float]:  # fmt: skip
    """`vqa_acc_generate` (beam search, cfg.num_beams, cfg.max_length tokens including `[DEC]`),
    `vqa_acc_rank` (over `answer_list`, cfg.k_test candidates re-ranked per question), the same per
    question type (`vqa_acc_rank_<type>`, `vqa_acc_generate_<type>`) and `vqa_n`."""
    model.eval()
    answer_list = list(answer_list) if answer_list is not None else default_answer_list(items)
    if not answer_list:
        raise ValueError("VQA evaluation needs a non-empty answer list")
    cand_ids, cand_mask = (t.to(device) for t in processor(answer_list))
    size = model.cfg.vision.image_size
    ranked: list[str] = []
    generated: list[str] = []
    for s in tqdm(range(0, len(items), cfg.batch_size), desc="vqa", leave=False):
        batch = items[s : s + cfg.batch_size]
        images = torch.stack([eval_transform(it.images[0], size) for it in batch]).to(device)
        q_ids, q_mask = (t.to(device) for t in processor([it.fields["question"] for it in batch]))
        # one vision + question-encoder pass serves both answer modes
        states = model.encode_questions(images, q_ids, q_mask)
        best = model.rank_answers(images, q_ids, q_mask, cand_ids, cand_mask, k=cfg.k_test, question_states=states)
        ranked += [answer_list[i] for i in best.tolist()]
        seqs = model.generate_answers(images, q_ids, q_mask, max_length=cfg.max_length, num_beams=cfg.num_beams,
                                      question_states=states)  # fmt: skip
        generated += [t.strip() for t in processor.tokenizer.batch_decode(seqs.tolist(), skip_special_tokens=True)]
    # questions without ground truth (VQA v2 test-dev) are answered but not scored, and counted apart
    scored = [i for i, it in enumerate(items) if it.fields.get("answers") or it.fields.get("answer")]
    types = [items[i].fields.get("type") for i in scored]
    out: dict[str, float] = {}
    for mode, preds in (("rank", ranked), ("generate", generated)):
        scores = [vqa_accuracy(preds[i], items[i].fields.get("answers", []), items[i].fields.get("answer"))
                  for i in scored]  # fmt: skip
        if scores:
            out |= accuracy_metrics(f"vqa_acc_{mode}", scores, types)
    out["vqa_n"] = float(len(items))
    out["vqa_n_unscored"] = float(len(items) - len(scored))
    return out
