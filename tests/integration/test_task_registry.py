"""The task registry drives training, checkpoints and evaluation: a toy task registered here (one
model class plus one entry) trains through `blip train`'s stage function and is evaluated by
`blip evaluate`'s, without touching any other module; the pipeline's stages read the same table."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from blip_core.data.task_data import TaskItem, data_kind, write_task_items
from blip_core.registry import Task, get_task, register, tasks, trainable_tasks, unregister

COLORS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


class ToyColour(nn.Module):
    """Is the image red? A conv and a linear head (the registry asks nothing more of a model class)."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.cfg = cfg
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.head = nn.Linear(8, 2)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(images).relu().mean((2, 3)))  # (B, 2)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.logits(images)
        return {"toy_loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


class ToyCollate:
    def __call__(self, batch):
        return {"images": torch.stack([imgs[0] for _, imgs in batch]),
                "labels": torch.tensor([int(it.fields["red"]) for it, _ in batch])}  # fmt: skip


def toy_train_data(cfg, data_dirs, processor, model):
    from blip_core.data.task_loader import TaskTrainData

    return TaskTrainData(data_dirs, ToyCollate(), batch_size=cfg.batch_size, image_size=model.cfg.vision.image_size,
                         seed=cfg.seed, crop_scale_min=1.0)  # fmt: skip


def toy_evaluate(model, items, processor, cfg, device):
    from blip_core.data.transforms import eval_transform

    images = torch.stack([eval_transform(it.images[0], model.cfg.vision.image_size) for it in items])
    pred = model.logits(images.to(device)).argmax(-1).cpu()
    truth = torch.tensor([int(it.fields["red"]) for it in items])
    return {"toy_acc": float((pred == truth).float().mean())}


def _items(n: int) -> list[TaskItem]:
    out = []
    for i in range(n):
        name = "red" if i % 2 == 0 else "blue"
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), COLORS[name]).save(buf, "JPEG")
        out.append(TaskItem(f"toy-{i:03d}", [buf.getvalue()], {"red": name == "red"}))
    return out


@pytest.fixture
def toy_task():
    task = register(Task(name="toy", kind="toy", family="blip", model=ToyColour, section="finetune_toy", data="toy",
                         forward=lambda trainer, b: trainer.forward_model(b["images"], b["labels"]),
                         train_data=toy_train_data, load_eval="blip_core.data.task_data:load_eval_items",
                         evaluate=toy_evaluate, metrics=("toy_acc",), text=False))  # fmt: skip
    yield task
    unregister("toy")


def test_a_toy_task_trains_and_evaluates_through_the_registry(toy_task, tmp_path):
    from flows.stages import stage_evaluate, stage_train

    data = tmp_path / "toy_train"
    write_task_items(data, _items(16), task="toy", split="toy_train")
    assert data_kind(data) == "toy"
    assert "toy" in trainable_tasks()
    params = tmp_path / "params.yaml"  # its own params section is accepted because the task is registered
    params.write_text(yaml.safe_dump({"finetune_toy": {"task": "toy", "batch_size": 8, "epochs": 20, "lr": 0.01,
                                                       "warmup_steps": 1, "log_every": 5}}))  # fmt: skip
    summary = stage_train("toy", [data], tmp_path / "run", params=params)
    assert summary["task"] == "toy" and summary["steps"] == 40
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert saved["kind"] == "toy"  # the checkpoint kind comes from the registry
    results = stage_evaluate([tmp_path / "run" / "model"], [data], tmp_path / "eval.json", params=params)
    assert results["toy_train"]["toy_acc"] == 1.0  # two flat colours: learnt
    unregister("toy")
    # gone from the registry, gone everywhere
    with pytest.raises(ValueError, match="--task must be one of .*got .toy."):
        stage_train("toy", [data], tmp_path / "run2", params=params)
    with pytest.raises(ValueError, match="no registered task evaluates a 'toy' checkpoint"):
        stage_evaluate([tmp_path / "run" / "model"], [data], tmp_path / "eval2.json")


def test_the_registry_rejects_clashes_and_unknown_tasks():
    with pytest.raises(ValueError, match="already registered"):
        register(Task(name="caption", kind="x", family="blip"))
    with pytest.raises(ValueError, match="already belongs to task caption"):
        register(Task(name="other", kind="captioner", family="blip", model=ToyColour))
    with pytest.raises(ValueError, match="unknown task"):
        get_task("vqa2")
    from blip_core.config.train import TrainConfig

    with pytest.raises(ValueError, match="train.task must be one of"):
        TrainConfig(task="video")  # evaluation only: never trained


def test_the_pipeline_stages_come_from_the_registry(tmp_path):
    from flows import dag
    from flows.model_registry import registrations

    names = [s.name for s in dag.stages("params.yaml", "data")]
    for t in ("vqa", "nlvr"):
        assert {f"finetune_{t}_baseline", f"finetune_{t}_bootstrapped"} <= set(names)
    evaluate = dag.by_name("evaluate_bootstrapped")
    for split in ("vqa_test", "nlvr_novel", "video_test"):
        assert f"data/world/{split}" in evaluate.kwargs["data_dirs"]
    assert "data/runs/bootstrapped/vqa/model" in evaluate.kwargs["model_dirs"]
    roles = {r.stage: r.role for r in registrations()}
    assert roles["finetune_vqa_bootstrapped"] == "vqa" and roles["finetune_caption_baseline"] == "captioner"
    # switched off in params.yaml: no stage, no split, no registered model
    doc = yaml.safe_load(Path("params.yaml").read_text())
    doc["downstream"] = {"tasks": []}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    off = dag.stages(str(tmp_path / "p.yaml"), "data")
    assert not [s.name for s in off if "vqa" in s.name or "nlvr" in s.name]
    assert all("video" not in d for s in off for d in s.kwargs.get("data_dirs", []))
    assert {s.name for s in off} == {n for n in names if "vqa" not in n and "nlvr" not in n}
    assert set(tasks()) >= {"pretrain", "caption", "retrieval", "vision", "vqa", "nlvr", "video"}
