"""The captioner's confidence in what a synthetic caption claims: per attribute word (a colour, a
shape, a size, a count), the probability the captioner gives that word's class among the classes of
its kind (synonyms summed; each word by its first token), teacher-forced after the prompt; a
caption's confidence is its least confident attribute word (1.0 without one).

Why: CapFilt is self-training, and self-training keeps a pseudo-label only where the teacher is
confident (FixMatch's threshold, Sohn et al. 2020; Noisy Student). A sampled caption (nucleus) can
take a word the captioner itself found less likely than the rest of its kind together; those are
the captions most often wrong. Measured on world seed 0 (the README's recipe table): it separates
the captioner's true synthetic captions from its false ones where the filter's ITM hardly does.

The word classes come from the embedded world's lexicon (`lexicon_classes`); for other data pass a
table of your own ({word: (kind, class)}); words outside it are not judged.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from blip_core.data.caption_edits import word_spans
from blip_core.data.world import lexicon as lx

# the numerals the world writes; an article ("a") is no count a reader holds to
COUNT_WORDS = {w: n for n, words in lx.COUNT_WORDS.items() for w in words if w not in ("a", "an")}


def lexicon_classes() -> dict[str, tuple[str, str]]:
    """{word: (kind, class)} of the world's attribute words; a plural shape noun is its own kind, so
    that "circles" competes with "squares", not with "circle"."""
    out: dict[str, tuple[str, str]] = {w: ("color", c) for w, c in lx.WORD_TO_COLOR.items()}
    out |= {w: ("shape_plural" if plural else "shape", s) for w, (s, plural) in lx.WORD_TO_SHAPE.items() if s}
    out |= {w: ("size", s) for w, s in lx.WORD_TO_SIZE.items()}
    out |= {w: ("count", str(n)) for w, n in COUNT_WORDS.items()}
    return out


class AttributeConfidence:
    """Per-caption confidence of a captioner in its attribute words (module docstring)."""

    def __init__(self, processor, classes: dict[str, tuple[str, str]] | None = None) -> None:
        self.processor = processor
        tok = processor.tokenizer
        classes = classes or lexicon_classes()
        first = {w: tok(w, add_special_tokens=False).input_ids[:1] for w in classes}
        owners: dict[tuple[str, int], set[str]] = defaultdict(set)
        for w, (kind, cls) in classes.items():
            if first[w]:
                owners[(kind, first[w][0])].add(cls)
        # a first token two classes of one kind share says nothing about either: left out
        self.classes = {w: kc for w, kc in classes.items()
                        if first[w] and len(owners[(kc[0], first[w][0])]) == 1}  # fmt: skip
        self.tokens: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))  # kind -> class -> ids
        for w, (kind, cls) in self.classes.items():
            if first[w][0] not in self.tokens[kind][cls]:
                self.tokens[kind][cls].append(first[w][0])

    @torch.no_grad()
    def __call__(self, captioner, image_embeds: torch.Tensor, captions: list[str]) -> list[float]:
        """(Bi, N, Dv) image tokens, B = Bi * R captions (image i's are rows i*R .. i*R+R-1) -> (B,) confidences."""
        proc = self.processor
        texts = [proc.prompt + c for c in captions]
        enc = proc.tokenizer([t.lower() for t in texts], padding="longest", truncation=True, max_length=proc.max_len,
                             return_tensors="pt", return_offsets_mapping=True)  # fmt: skip
        device = image_embeds.device
        ids, mask = enc.input_ids.to(device), enc.attention_mask.to(device)
        R = ids.shape[0] // image_embeds.shape[0]
        dec = ids.clone()
        dec[:, 0] = captioner.cfg.text.bos_token_id
        embeds = image_embeds.repeat_interleave(R, dim=0)
        logits = captioner(None, dec, mask, image_embeds=embeds)["lm_logits"]
        probs = logits.float().log_softmax(-1).exp().cpu()  # (B, L, V), read per word below: one transfer
        out = []
        for b, text in enumerate(texts):
            starts = {a: t for t, (a, z) in enumerate(enc.offset_mapping[b].tolist()) if z > a}
            worst = 1.0
            for start, _, word in word_spans(text.lower()):
                t = starts.get(start)
                if start < len(proc.prompt) or word not in self.classes or not t:
                    continue
                kind, cls = self.classes[word]
                mass = {c: probs[b, t - 1, ids_].sum().item() for c, ids_ in self.tokens[kind].items()}
                worst = min(worst, mass[cls] / sum(mass.values()))
            out.append(worst)
        return out
