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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Registration:
    """One model the flow registers: a version of the registered model `name`, logged in the MLflow run of the
    stage that trained it, scored by `metric` ("<split>/<metric>" of the comparison rows, the column
    of its `variant`) so that the `best` alias follows the measured score. Derived from the DAG's
    stages (`Stage.registers`, whose roles come from the task registry)."""

    role: str
    name: str  # the registered model (the task registry's `<family>-<role>`)
    stage: str
    variant: str  # baseline | bootstrapped | vision: the model folder in the layout, and its column
    model: str  # the checkpoint folder the stage writes
    metric: str
    about: str  # what the model is and what it was trained on, for the version's description


def registrations(params: str = "params.yaml", root: str = "data") -> list[Registration]:
    """Every model the flow registers, in DAG order (a role's baseline version before its bootstrapped one)."""
    from flows import dag

    return [Registration(s.registers.role, s.registers.name, s.name, s.registers.variant, s.outs[0], s.registers.metric,
                         s.registers.about) for s in dag.stages(params, root) if s.registers is not None]  # fmt: skip


class BlipPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from blip_core.models import pretrained
        from blip_core.registry import task_for_role

        path = context.artifacts["checkpoint"]
        self.kind, cfg = pretrained.read_config(path)
        self.models = {}
        # a pre-training checkpoint serves as the captioner and the filter it starts (their `init_from`)
        roles = [task_for_role(r) for r in ("captioner", "filter")]
        for kind in [t.kind for t in roles if self.kind in t.init_from] or [self.kind]:
            self.models[kind] = pretrained.load_for_inference(path, kind=kind)
        self.processor = pretrained.text_processor(self.kind, cfg) if self.kind != "vision" else None
        self.image_size = cfg.vision.image_size

    def _images(self, col: pd.Series):
        import torch
        from PIL import Image

        from blip_core.data.transforms import eval_transform

        imgs = [Image.open(io.BytesIO(v) if isinstance(v, bytes) else v).convert("RGB") for v in col]
        return torch.stack([eval_transform(im, self.image_size) for im in imgs])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        import torch

        from blip_core.models.common.generate import GenerationConfig, caption_images

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
            if "vqa" in self.models:  # open-ended answers (BLIP's generate mode)
                ids, mask = self.processor(list(model_input["question"]))
                seqs = self.models["vqa"].generate_answers(images, ids, mask).tolist()
                out["answer"] = [
                    t.strip() for t in self.processor.tokenizer.batch_decode(seqs, skip_special_tokens=True)
                ]
            if "nlvr" in self.models:  # is the statement true of the (left, right) pair?
                ids, mask = self.processor(list(model_input["statement"]))
                logits = self.models["nlvr"](images, self._images(model_input["image_right"]), ids, mask)["logits"]
                out["p_true"] = logits.float().softmax(-1)[:, 1].numpy()
        return out


def signature(role: str, groups: tuple[str, ...] = ("shape", "color")):
    """What `predict` takes and returns for a role: encoded image bytes (and the caption to score, for
    a filter) in; the generated caption and/or ITM p(match) and ITC cosine out; a VQA model answers a
    question about the image, an NLVR² model says how likely a statement about two images is true;
    the vision start names the classes it sees in each of its label `groups`."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    if role == "vision":  # class names per label group, comma-separated
        return ModelSignature(inputs=Schema([ColSpec("binary", "image")]),
                              outputs=Schema([ColSpec("string", g) for g in groups]))  # fmt: skip
    if role == "vqa":
        return ModelSignature(inputs=Schema([ColSpec("binary", "image"), ColSpec("string", "question")]),
                              outputs=Schema([ColSpec("string", "answer")]))  # fmt: skip
    if role == "nlvr":
        return ModelSignature(inputs=Schema([ColSpec("binary", "image"), ColSpec("binary", "image_right"),
                                             ColSpec("string", "statement")]),
                              outputs=Schema([ColSpec("double", "p_true")]))  # fmt: skip
    captions, scores = role in ("captioner", "pretrain"), role in ("filter", "pretrain")
    inputs = [ColSpec("binary", "image"), ColSpec("string", "caption", required=role == "filter")]
    outputs = [ColSpec("string", "caption_generated")] if captions else []
    if scores:  # a pre-training checkpoint scores only when a caption is given
        outputs += [ColSpec("double", c, required=role == "filter") for c in ("itm_prob", "itc_cosine")]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def log_and_register(
    tracking_uri: str, run_id: str, checkpoint: str | Path, name: str, role: str, *, metric: float | None = None,
    metric_name: str | None = None, description: str | None = None, tags: dict[str, str] | None = None,
    higher_is_better: bool = True, model_description: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Log `checkpoint` as a pyfunc model in `run_id` (the stage run that trained it), register it as
    a new version of the registered model `name` (a `role` model) with `description` and `tags`, and
    move the `best` alias to it when `metric` beats the current best (or there is none); the
    registered model itself gets `model_description`. The stage run keeps its own end time."""
    from blip_core.config.data import REGION_GROUP
    from blip_core.models import pretrained

    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    before = client.get_run(run_id).info
    # MLflow tags a logged model with the running script's path (`mlflow.source.name`): log it as the
    # user knows it, relative to the checkout, never the absolute path of this machine
    source = {"mlflow.source.name": _source_name()}
    # its image-level label groups (per-object boxes are read only given boxes: not a predict column)
    classes = pretrained.read_config(checkpoint)[1].classes if role == "vision" else {}
    groups = tuple(g for g in classes if g != REGION_GROUP)
    with mlflow.start_run(run_id=run_id, nested=True):
        info = mlflow.pyfunc.log_model(
            tags=source,
            name="model",
            python_model=BlipPyfunc(),
            artifacts={"checkpoint": str(checkpoint)},
            signature=signature(role, groups),
            pip_requirements=["blip-capfilt"],  # this project; no pip freeze inference offline
            registered_model_name=name,
        )
    if before.end_time is not None:  # reopening a finished run ends it now: give back the stage's own end
        client.set_terminated(run_id, before.status, end_time=before.end_time)
    version = str(info.registered_model_version)
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, version, key, value)
    if metric is not None:
        client.set_model_version_tag(name, version, "score", str(metric))
        if metric_name:
            client.set_model_version_tag(name, version, "score_metric", metric_name)
    if description:
        client.update_model_version(name, version, description=description)
    if model_description:
        client.update_registered_model(name, description=model_description)
    best = _current_best(client, name)
    better = best is None or metric is None or (metric > best if higher_is_better else metric < best)
    if better:
        client.set_registered_model_alias(name, "best", version)
    return {"name": name, "version": version, "best": better, "model_uri": info.model_uri}


def _source_name() -> str:
    from blip_core.tracking import redact

    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("blip")
    try:
        return str(script.resolve().relative_to(REPO))
    except ValueError:
        return redact(script.name)


def describe_model(reg: Registration) -> str:
    """A registered model's description: what it is, what its versions are, what `best` follows."""
    from blip_core.registry import task_for_role

    about = task_for_role(reg.role).about
    if reg.variant == "vision":
        versions = "one version per run (the supervised vision start both pre-trainings load)"
    else:
        versions = "per run a baseline and a bootstrapped version (tag `variant`), on raw and on CapFilt data"
    return f"{reg.name}: {about}; {versions}. The alias `best` follows {reg.metric}."


def describe(reg: Registration, score: float | None, run_id: str, data_hash: str | None = None) -> str:
    """A version's description: what it is and was trained on, which run, which data, its score."""
    figure = f"{reg.metric} {score:.4g}" if score is not None else f"{reg.metric} not measured"
    data = f", world data {data_hash}" if data_hash else ""
    return f"{reg.about}. Stage `{reg.stage}` (MLflow run {run_id}{data}); {figure}."


def _current_best(client, name: str) -> float | None:
    try:
        mv = client.get_model_version_by_alias(name, "best")
    except mlflow.exceptions.MlflowException:
        return None
    score = mv.tags.get("score")
    return float(score) if score not in (None, "None") else None
