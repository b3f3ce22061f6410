"""Captioning evaluation: beam search on a split, COCO caption metrics, grounded accuracy.

COCO metrics come from pycocoevalcap (PTB tokenizer; BLEU-1..4, METEOR, ROUGE-L, CIDEr). SPICE needs
Stanford CoreNLP jars, which it downloads on first use: offline it is reported as unavailable, not
as a failure. Grounded accuracy parses each generated caption with the world's grounding checker
and scores it against the rendered scene (only for splits with ground truth), with a repetition
diagnostic: how often a caption names one colour-shape pair twice, against how often the scenes
hold such a pair.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from blip_core.config.train import EvalConfig
from blip_core.data.loader import EvalSplit
from blip_core.data.world.grounding import (
    ATTRIBUTES,
    Scene,
    ground_caption,
    names_pair_twice,
    parse_caption,
    scene_has_pair_twice,
)
from blip_core.eval.composition import captioner_composition
from blip_core.models.common.generate import GenerationConfig, generate

logger = logging.getLogger(__name__)


@functools.cache
def _meteor():
    """One METEOR scorer (a Java process) per Python process: its start, JVM and paraphrase tables,
    takes ~8 s and scoring 400 captions ~0.5 s, so every split and evaluation stage of a run shares it."""
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()


def coco_caption_metrics(gts: dict[str, list[str]], res: dict[str, str], *, spice: bool = True) -> dict[str, Any]:
    """Standard COCO caption metrics for predictions `res` against references `gts` (keyed alike)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    g = tok.tokenize({k: [{"caption": c} for c in v] for k, v in gts.items()})
    r = tok.tokenize({k: [{"caption": res[k]}] for k in gts})
    out: dict[str, Any] = {}
    bleu, _ = Bleu(4).compute_score(g, r, verbose=0)
    out |= {f"bleu{i + 1}": float(b) for i, b in enumerate(bleu)}
    try:
        out["meteor"] = float(_meteor().compute_score(g, r)[0])
    except (BrokenPipeError, ValueError):  # the shared Java process died: a fresh one, once
        dead = _meteor()
        if dead.lock.locked():  # the failed call left it held; Meteor.__del__ takes it to close
            dead.lock.release()
        with contextlib.suppress(OSError):  # its pipe is broken: closed here, quietly, not in __del__
            dead.meteor_p.stdin.close()
        _meteor.cache_clear()
        out["meteor"] = float(_meteor().compute_score(g, r)[0])
    out["rouge_l"] = float(Rouge().compute_score(g, r)[0])
    out["cider"] = float(Cider().compute_score(g, r)[0])
    if spice and spice_available():
        from pycocoevalcap.spice.spice import Spice

        out["spice"] = float(Spice().compute_score(g, r)[0])
    elif spice:  # metrics are numbers: say it in the log, once
        _warn_once("SPICE skipped: Stanford CoreNLP jars are not present locally (SPICE would download them)")
    return out


@functools.cache
def _warn_once(message: str) -> None:
    logger.warning(message)


def spice_available() -> bool:
    """SPICE runs offline only when its CoreNLP jars are already in pycocoevalcap/spice/lib."""
    from pathlib import Path

    import pycocoevalcap.spice as spice_pkg

    lib = Path(spice_pkg.__file__).parent / "lib"
    return (lib / "stanford-corenlp-3.6.0.jar").is_file() and (lib / "stanford-corenlp-3.6.0-models.jar").is_file()


def grounding_metrics(captions: list[str], scenes: list[dict | None]) -> dict[str, float]:
    """Mean attribute precision / object recall / attribute recall, the share of true captions, and
    by attribute (`grounded_precision_<attribute>`: true mentions of that attribute over its mentions
    in the split, each judged on its own; `grounded_mentions_<attribute>`: the number of mentions),
    so that which attribute fails shows at once.

    Repetition: `grounded_repeated_pair_rate` is the share of captions with two or more noun phrases
    that name one (colour, shape) pair twice ("a black triangle and one black triangle"), out of
    `grounded_multi_phrase` such captions; `scene_repeated_pair_rate` is the share of scenes with two
    or more objects that hold two objects of one colour and shape, the rate a faithful captioner
    could need. Each rate is absent when its denominator is zero."""
    pairs = [(parse_caption(c), Scene.from_dict(s)) for c, s in zip(captions, scenes) if s is not None]
    if not pairs:
        return {}
    results = [ground_caption(m, scene) for m, scene in pairs]
    out = {
        "grounded_precision": float(np.mean([r.precision for r in results])),
        "grounded_object_recall": float(np.mean([r.object_recall for r in results])),
        "grounded_attribute_recall": float(np.mean([r.attribute_recall for r in results])),
        "grounded_true_rate": float(np.mean([r.is_true for r in results])),
    }
    for attr in ATTRIBUTES:
        mentions = sum(r.by_attribute[attr][0] for r in results)
        out[f"grounded_mentions_{attr}"] = float(mentions)
        if mentions:  # no mention, no precision (absent rather than a made-up 0 or 1)
            out[f"grounded_precision_{attr}"] = sum(r.by_attribute[attr][1] for r in results) / mentions
    multi = [m for m, _ in pairs if len(m.phrases) >= 2]
    out["grounded_multi_phrase"] = float(len(multi))
    if multi:
        out["grounded_repeated_pair_rate"] = sum(names_pair_twice(m) for m in multi) / len(multi)
    crowded = [scene for _, scene in pairs if len(scene.objects) >= 2]
    if crowded:
        out["scene_repeated_pair_rate"] = sum(scene_has_pair_twice(scene) for scene in crowded) / len(crowded)
    return out


@torch.no_grad()
def generate_split_captions(captioner, split: EvalSplit, processor, cfg: EvalConfig, device: torch.device) -> list[str]:
    captioner.eval()
    gcfg = GenerationConfig(
        method="beam", num_beams=cfg.num_beams, max_length=cfg.max_length, min_length=cfg.min_length
    )
    prompt = processor.prompt_ids().to(device)
    out: list[str] = []
    for s in tqdm(range(0, len(split.images), cfg.batch_size), desc="captioning", leave=False):
        emb = captioner.image_embeds(split.images[s : s + cfg.batch_size].to(device))
        out += processor.decode(generate(captioner, emb, prompt, gcfg))
    return out


def evaluate_captioning(captioner, split: EvalSplit, processor, cfg: EvalConfig, device: torch.device) -> tuple:
    """(metrics, predictions {key: caption})."""
    preds = generate_split_captions(captioner, split, processor, cfg, device)
    res = dict(zip(split.keys, preds))
    gts = dict(zip(split.keys, split.captions))
    metrics = coco_caption_metrics(gts, res) | grounding_metrics(preds, split.scenes)
    if any(split.scenes):  # binding and relation direction, teacher-forced (blip_core.eval.composition)
        metrics |= captioner_composition(captioner, split, processor, cfg.batch_size, device)
    return metrics, res


def caption_grid(split_dir, predictions: dict[str, str], out_file, *, n: int = 16, cols: int = 4, title: str = ""):
    """A PNG grid of the first `n` images of a split: per image the first reference caption and the
    generated one, marked with the grounding checker's verdict (true in every attribute or not).
    The title sits in a band of its own above the grid, clear of the top row's captions."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    from blip_core.data.reader import iter_samples

    samples = []
    for s in iter_samples(split_dir):
        if s["key"] in predictions:
            samples.append(s)
        if len(samples) == n:
            break
    if not samples:
        return None
    fig = grid_figure(samples, predictions, cols=cols, title=title)
    out_file = Path(out_file)
    fig.savefig(out_file, dpi=90)
    plt.close(fig)
    return out_file


def grid_figure(samples: list[dict], predictions: dict[str, str], *, cols: int = 4, title: str = ""):
    """The caption grid's matplotlib figure (`caption_grid` saves it)."""
    import textwrap

    import matplotlib.pyplot as plt

    rows = (len(samples) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.9, rows * 3.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, s in zip(axes.flat, samples):
        ax.imshow(s["image"])
        generated = predictions[s["key"]]
        scene = (s["meta"].get("gt") or {}).get("scene")
        verdict, color = "", "black"
        if scene is not None:
            true = ground_caption(generated, Scene.from_dict(scene)).is_true
            verdict, color = ("\u2713 ", "darkgreen") if true else ("\u2717 ", "firebrick")
        ref = "\n".join(textwrap.wrap("ref: " + s["captions"][0], 34))
        gen = "\n".join(textwrap.wrap(verdict + generated, 34))
        ax.set_title(gen, fontsize=7, color=color)
        ax.text(0.5, -0.04, ref, transform=ax.transAxes, ha="center", va="top", fontsize=7, color="0.15")
    band = 0.55 / fig.get_figheight() if title else 0.0  # inches kept for the title, as a share of the height
    fig.tight_layout(h_pad=3.0, rect=(0, 0, 1, 1 - band))
    if title:
        fig.suptitle(title, fontsize=10, y=1 - band / 2, va="center")
    return fig
