"""MLflow model registry: our checkpoints logged as pyfunc models and registered by role.

A `BlipPyfunc` wraps a checkpoint directory (safetensors + config + tokenizer). `predict` takes a
DataFrame with an `image` column (file paths or raw bytes) and, for the filter, a `caption` column:
the captioner returns captions, the filter ITM p(match) and ITC cosine, a pre-training checkpoint
both. The best version of each registered model carries the alias `best`.
"""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

logger = logging.getLogger(__name__)

REGISTERED = {
    "vision": "blip-vision",
    "pretrain": "blip-pretrain",
    "captioner": "blip-captioner",
    "filter": "blip-filter",
    "bootstrapped": "blip-bootstrapped",
}


class BlipPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from blip_core.model import weights
        from blip_core.model.tokenizer import TextProcessor

        path = context.artifacts["checkpoint"]
        self.kind, cfg = weights.read_config(path)
        self.models = {}
        for kind in ["captioner", "retrieval"] if self.kind == "pretrain" else [self.kind]:
            self.models[kind] = weights.load_for_inference(path, kind=kind)
        self.processor = TextProcessor.for_model(cfg) if self.kind != "vision" else None
        self.image_size = cfg.vision.image_size

    def _images(self, col: pd.Series):
        import torch
        from PIL import Image

        from blip_core.data.loader import eval_transform

        imgs = [Image.open(io.BytesIO(v) if isinstance(v, bytes) else v).convert("RGB") for v in col]
        return torch.stack([eval_transform(im, self.image_size) for im in imgs])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        import torch

        from blip_core.model.generate import GenerationConfig, caption_images

        images = self._images(model_input["image"])
        out = pd.DataFrame(index=model_input.index)
        with torch.no_grad():
            if "vision" in self.models:  # the supervised start: the classes it sees, per label group
                m = self.models["vision"]
                for group, hits in m.predict(images).items():
                    names = m.cfg.classes[group]
                    out[group] = [",".join(n for n, h in zip(names, row) if h) for row in hits.tolist()]
            if "captioner" in self.models:
                out["caption_generated"] = caption_images(self.models["captioner"], self.processor, images,
                                                          GenerationConfig(method="beam", num_beams=3))  # fmt: skip
            if "retrieval" in self.models and "caption" in model_input:
                m = self.models["retrieval"]
                ids, mask = self.processor(list(model_input["caption"]))
                s = m.score(m.image_embeds(images), ids, mask)
                out["itm_prob"], out["itc_cosine"] = s["itm_prob"].numpy(), s["itc_cosine"].numpy()
        return out


def signature(role: str):
    """What `predict` takes and returns for a role: encoded image bytes (and the caption to score, for
    a filter) in; the generated caption and/or ITM p(match) and ITC cosine out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    if role == "vision":  # class names per label group, comma-separated
        return ModelSignature(inputs=Schema([ColSpec("binary", "image")]),
                              outputs=Schema([ColSpec("string", "shape"), ColSpec("string", "color")]))  # fmt: skip
    captions, scores = role in ("captioner", "pretrain", "bootstrapped"), role in ("filter", "pretrain", "bootstrapped")
    inputs = [ColSpec("binary", "image"), ColSpec("string", "caption", required=role == "filter")]
    outputs = [ColSpec("string", "caption_generated")] if captions else []
    if scores:  # a pre-training checkpoint scores only when a caption is given
        outputs += [ColSpec("double", c, required=role == "filter") for c in ("itm_prob", "itc_cosine")]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def log_and_register(
    tracking_uri: str, run_id: str, checkpoint: str | Path, role: str, *, metric: float | None = None,
    higher_is_better: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Log `checkpoint` as a pyfunc model in `run_id` (the stage run that trained it), register it as
    REGISTERED[role], and move the `best` alias to this version when `metric` beats the current best
    (or there is none)."""
    name = REGISTERED[role]
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    from blip_core.tracking import redact

    # MLflow tags a logged model with the running script's absolute path (`mlflow.source.name`),
    # often under the home folder: log it redacted, as every other tag
    source = {"mlflow.source.name": redact(sys.argv[0] if sys.argv and sys.argv[0] else "blip")}
    with mlflow.start_run(run_id=run_id, nested=True):
        info = mlflow.pyfunc.log_model(
            tags=source,
            name="model",
            python_model=BlipPyfunc(),
            artifacts={"checkpoint": str(checkpoint)},
            signature=signature(role),
            pip_requirements=["blip-capfilt"],  # this project; no pip freeze inference offline
            registered_model_name=name,
        )
    version = str(info.registered_model_version)
    if metric is not None:
        client.set_model_version_tag(name, version, "score", str(metric))
    best = _current_best(client, name)
    better = best is None or metric is None or (metric > best if higher_is_better else metric < best)
    if better:
        client.set_registered_model_alias(name, "best", version)
    return {"name": name, "version": version, "best": better, "model_uri": info.model_uri}


def _current_best(client, name: str) -> float | None:
    try:
        mv = client.get_model_version_by_alias(name, "best")
    except mlflow.exceptions.MlflowException:
        return None
    score = mv.tags.get("score")
    return float(score) if score not in (None, "None") else None
