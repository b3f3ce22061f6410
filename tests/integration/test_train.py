"""Training engine: resume equality, golden losses, fine-tunes, DDP, bad config, MLflow logging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from blip_core.config.train import TrainConfig
from blip_core.models.blip.model import BlipCaptioner, BlipRetrieval
from blip_core.models.blip.presets import get_preset
from blip_core.models.pretrained import load_pretrained
from blip_core.train.entry import run_training
from blip_core.train.loop import Trainer
from flows.cli import main as cli_main

GOLDEN = Path(__file__).resolve().parents[1] / "assets" / "golden_losses" / "tiny_cpu.json"


@pytest.fixture(scope="module")
def tokenizer_dir(tiny_world, tmp_path_factory):
    from flows.stages import stage_tokenizer

    out = tmp_path_factory.mktemp("tok")
    stage_tokenizer([tiny_world / "coco_train", tiny_world / "web"], out)
    return out


def _cfg(**kw) -> TrainConfig:
    base = dict(
        task="pretrain",
        preset="tiny",
        batch_size=8,
        max_steps=6,
        lr=3e-4,
        warmup_steps=2,
        seed=0,
        shuffle_buffer=50,
        ckpt_every=3,
        log_every=1,
    )
    return TrainConfig(**(base | kw))


def _losses(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "losses.jsonl").read_text().splitlines()]


def test_killed_and_resumed_run_matches_uninterrupted(tiny_world, tokenizer_dir, tmp_path, monkeypatch):
    data = [tiny_world / "coco_train", tiny_world / "web"]
    run_training(_cfg(), data, tmp_path / "full", tokenizer=tokenizer_dir)
    real_step = Trainer.train_step

    def crash_after_3(self, batches):
        if self.step == 3:
            raise KeyboardInterrupt("killed")
        return real_step(self, batches)

    monkeypatch.setattr(Trainer, "train_step", crash_after_3)
    with pytest.raises(KeyboardInterrupt):
        run_training(_cfg(), data, tmp_path / "resumed", tokenizer=tokenizer_dir)
    monkeypatch.setattr(Trainer, "train_step", real_step)
    assert [r["step"] for r in _losses(tmp_path / "resumed")] == [1, 2, 3]
    run_training(_cfg(), data, tmp_path / "resumed", tokenizer=tokenizer_dir, resume=True)
    full, resumed = _losses(tmp_path / "full"), _losses(tmp_path / "resumed")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6]
    # equal up to fp32 rounding: a resumed run's tensors sit at other addresses, and the CPU kernels'
    # reduction order follows alignment (measured 2.6e-6 on a loss of 3.59 after other tests ran);
    # a wrong batch, RNG or optimizer state moves these losses far beyond rounding
    for a, b in zip(full, resumed, strict=True):
        for k in ("itc_loss", "itm_loss", "lm_loss"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), (a["step"], k, a[k], b[k])
    # checkpoints: atomic names, only the last keep_last kept, final weights loadable
    ckpts = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir())
    assert ckpts == ["ckpt_00000003.pt", "ckpt_00000006.pt"]
    assert load_pretrained(tmp_path / "resumed" / "model").cfg.vision == get_preset("tiny").vision


def test_auto_resume_continues_the_same_code_and_restarts_edited_code(tiny_world, tokenizer_dir, tmp_path, monkeypatch):
    """resume="auto" (the pipeline's stages) resumes a finished or killed run of the same config, data
    and library code; after an edit of blip_core the stage re-runs, and it must train, not re-save
    the old code's weights from their last checkpoint."""
    from blip_core.train import entry

    data = [tiny_world / "coco_train", tiny_world / "web"]
    first = run_training(_cfg(max_steps=3), data, tmp_path / "r", tokenizer=tokenizer_dir, resume="auto")
    again = run_training(_cfg(max_steps=3), data, tmp_path / "r", tokenizer=tokenizer_dir, resume="auto")
    assert (first["resumed_from_step"], again["resumed_from_step"]) == (None, 3)
    monkeypatch.setattr(entry, "library_digest", lambda: "edited")
    edited = run_training(_cfg(max_steps=3), data, tmp_path / "r", tokenizer=tokenizer_dir, resume="auto")
    assert edited["resumed_from_step"] is None
    assert [r["step"] for r in _losses(tmp_path / "r")] == [1, 2, 3]  # one run's log, not two mixed


def test_golden_losses_tiny_preset(tiny_world, tokenizer_dir, tmp_path):
    """Refactors must reproduce these per-step losses (fixed seed, CPU, fp32). Regenerate only for a
    deliberate change of the maths: BLIP_UPDATE_GOLDEN=1 pytest -k golden."""
    run_training(
        _cfg(max_steps=4), [tiny_world / "coco_train", tiny_world / "web"], tmp_path / "g", tokenizer=tokenizer_dir
    )
    got = [{k: r[k] for k in ("step", "itc_loss", "itm_loss", "lm_loss")} for r in _losses(tmp_path / "g")]
    if os.environ.get("BLIP_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for a, b in zip(got, want, strict=True):
        for k in ("itc_loss", "itm_loss", "lm_loss"):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), (a["step"], k)


def test_deterministic_runs_are_equal_and_the_setting_is_restored(tiny_world, tokenizer_dir, tmp_path):
    """Two runs of one seed give the same losses to the bit (with 2 threads the default kernels did
    not: an ulp at step 2, then drift), and the process-wide setting is put back afterwards."""
    data = [tiny_world / "coco_train", tiny_world / "web"]
    runs = []
    for name in ("a", "b"):
        run_training(_cfg(max_steps=5, ckpt_every=100), data, tmp_path / name, tokenizer=tokenizer_dir)
        runs.append([r["loss"] for r in _losses(tmp_path / name)])
        assert not torch.are_deterministic_algorithms_enabled()
    assert runs[0] == runs[1]


def test_finetunes_from_pretrain_checkpoint(tiny_world, tokenizer_dir, tmp_path):
    pre = tmp_path / "pre"
    run_training(_cfg(max_steps=2), [tiny_world / "coco_train"], pre, tokenizer=tokenizer_dir)
    for task in ("caption", "retrieval"):
        extra = {"lm_unlikelihood": 0.5} if task == "caption" else {"itm_swap_negatives": True, "itm_word_loss": 1.0}
        s = run_training(
            _cfg(task=task, max_steps=2, schedule="cosine", **extra),
            [tiny_world / "coco_train"],
            tmp_path / task,
            init=pre / "model",
        )
        assert s["steps"] == 2 and s["task"] == task
        if task == "caption":  # each caption's swap negative reached the loss
            assert all(line["unlikelihood_loss"] > 0 for line in _losses(tmp_path / task)), _losses(tmp_path / task)
        else:  # the swap negatives' word labels reached the word-level ITM loss
            assert all(line["itm_word_loss"] > 0 for line in _losses(tmp_path / task)), _losses(tmp_path / task)
        expected = BlipCaptioner if task == "caption" else BlipRetrieval
        assert type(load_pretrained(tmp_path / task / "model")) is expected
    # evaluation end to end: a pre-training checkpoint is scored as captioner and as filter
    from flows.stages import stage_evaluate

    params = tmp_path / "p.yaml"
    params.write_text("evaluate:\n  batch_size: 4\n  k_test: 3\n  max_images: 6\n  max_length: 12\n")
    res = stage_evaluate([pre / "model"], [tiny_world / "val"], tmp_path / "eval.json", params=params)
    m = res["val"]
    assert {"tr_r1", "ir_r1", "r_mean", "cider", "bleu4", "grounded_precision"} <= set(m)
    assert all(0.0 <= m[k] <= 100.0 for k in ("tr_r1", "ir_r10", "r_mean"))
    assert json.loads((tmp_path / "eval.json").read_text()) == res
    assert len(json.loads((tmp_path / "eval_captions.json").read_text())["val"]) == 6


def test_downstream_finetunes_and_one_evaluation_of_every_task(tiny_world, tokenizer_dir, tmp_path):
    """VQA and NLVR² fine-tune from a pre-training checkpoint on the world's items; one evaluation
    dispatches each model to the folders its task reads (the filter to the video clips too), and the
    tower's probes stay on the image-caption splits."""
    from blip_core.models.blip.nlvr import BlipNLVR
    from blip_core.models.blip.vqa import BlipVQA
    from flows.stages import stage_evaluate

    pre = tmp_path / "pre"
    run_training(_cfg(max_steps=2), [tiny_world / "coco_train"], pre, tokenizer=tokenizer_dir)
    for task, cls in (("vqa", BlipVQA), ("nlvr", BlipNLVR)):
        s = run_training(_cfg(task=task, max_steps=2, schedule="cosine"), [tiny_world / f"{task}_train"],
                         tmp_path / task, init=pre / "model")  # fmt: skip
        assert s["steps"] == 2 and s["task"] == task and s["num_pairs"] > 0
        assert type(load_pretrained(tmp_path / task / "model")) is cls
    params = tmp_path / "p.yaml"
    params.write_text("evaluate:\n  batch_size: 4\n  k_test: 3\n  max_images: 6\n  max_length: 8\n")
    splits = [tiny_world / s for s in ("test", "vqa_test", "nlvr_test", "video_test")]
    res = stage_evaluate([pre / "model", tmp_path / "vqa" / "model", tmp_path / "nlvr" / "model"], splits,
                         tmp_path / "eval.json", params=params, probe_model=pre / "model",
                         probe_fit_dir=tiny_world / "coco_train", grid_file=tmp_path / "grid.png")  # fmt: skip
    assert {"r_mean", "cider", "probe_shape_f1"} <= set(res["test"])
    assert {"vqa_acc_rank", "vqa_acc_generate", "vqa_n"} <= set(res["vqa_test"]) and res["vqa_test"]["vqa_n"] == 6
    assert {"nlvr_acc", "nlvr_n"} <= set(res["nlvr_test"])
    assert {"r_mean", "tr_r1", "ir_r1", "video_frames"} <= set(res["video_test"])
    assert not any(k.startswith("probe_") for s in ("vqa_test", "nlvr_test", "video_test") for k in res[s])
    assert (tmp_path / "grid.png").is_file()


def _blip(*args):
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], capture_output=True, text=True)


def test_bad_config_values_name_the_key(tiny_world, tokenizer_dir, tmp_path, capsys):
    def params(body: str) -> Path:
        p = tmp_path / f"p{abs(hash(body))}.yaml"
        p.write_text(body)
        return p

    cases = [
        ("pretrain:\n  lr: -0.1\n", "train.lr"),
        ("pretrain:\n  batch_size: 7\n", "queue_size"),
        ("pretrain:\n  preset: huge\n", "unknown preset 'huge'"),
        ("pretrain:\n  lr: fast\n", "Wrong type for pretrain.lr"),
        ("pretrain:\n  learning_rate: 0.1\n", "Unknown config key: pretrain.learning_rate"),
        ("pretrian:\n  lr: 0.1\n", "unknown section(s) ['pretrian']"),
        ("pretrain:\n  batch_size: [8]\n", "Wrong type for pretrain.batch_size"),
        ("pretrain:\n  lr: 1e-3\n  lr: [\n", "not valid YAML"),
    ]
    argv = ["train", "--task", "pretrain", "--data", tiny_world / "coco_train", "--out", tmp_path / "o",
            "--tokenizer", tokenizer_dir, "--params"]  # fmt: skip
    # the first through a real process (exit status, no traceback), the rest through main() (same code path)
    r = _blip(*argv, params(cases[0][0]))
    assert r.returncode == 2 and cases[0][1] in r.stderr and "Traceback" not in r.stderr, r.stderr[-500:]
    for body, message in cases[1:]:
        code = cli_main([str(a) for a in [*argv, params(body)]])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, (body, err[-500:])
    r = _blip("train", "--task", "pretrain", "--data", tmp_path / "nope", "--out", tmp_path / "o")
    assert r.returncode == 2 and "data directory not found" in r.stderr


def test_ddp_two_processes_match_one(tiny_world, tokenizer_dir, tmp_path):
    """2 CPU processes (gloo) with batch 4 each == 1 process with batch 8 (caption task: no sampling;
    global-token LM normalisation makes the gradients identical).

    What must match is the maths, not one CPU's float kernels: the all-reduced gradients of the
    first step equal the single-process gradients within fp32 reduction-order noise, and the losses
    of the following steps agree. Weights after several AdamW steps are *not* compared: Adam turns
    reduction-order noise in near-zero gradients into +-lr steps, and how large that noise is
    depends on the CPU's vector width (it passed on AVX2 and failed on AVX512 machines).
    """
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, torch
        from torch.optim.optimizer import register_optimizer_step_pre_hook
        from blip_core.models.blip import presets
        from blip_core.config import TrainConfig
        from blip_core.distributed import is_main_process
        from blip_core.train.entry import run_training

        def tiny_group():
            # BatchNorm keeps per-rank statistics under CPU DDP (no SyncBatchNorm kernel on CPU):
            # GroupNorm has none, so the maths of N processes and one process must agree exactly
            cfg = presets.tiny()
            cfg.vision.stem_norm = "group"
            return cfg

        presets.PRESETS["tiny_group"] = tiny_group
        bs, out = int(sys.argv[1]), sys.argv[2]
        saved = []

        def dump_first_grads(opt, args, kwargs):
            if not saved and is_main_process():
                saved.append(1)
                grads = [p.grad.detach().clone() for g in opt.param_groups for p in g["params"] if p.grad is not None]
                torch.save(grads, out + ".grads.pt")

        register_optimizer_step_pre_hook(dump_first_grads)
        cfg = TrainConfig(task="caption", preset="tiny_group", batch_size=bs, max_steps=3, lr=1e-3, warmup_steps=0,
                          shuffle_buffer=0, seed=0, crop_scale_min=1.0)
        run_training(cfg, [r"{tiny_world / "coco_train"}"], out, tokenizer=r"{tokenizer_dir}")
        """)
    )
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, str(script), "8", str(tmp_path / "one")], env=env, capture_output=True, text=True
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            str(script),
            "4",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    import torch

    ga, gb = torch.load(tmp_path / "one.grads.pt"), torch.load(tmp_path / "two.grads.pt")
    assert len(ga) == len(gb) > 0
    scale = max(float(g.abs().max()) for g in ga)
    for i, (x, y) in enumerate(zip(ga, gb, strict=True)):
        # fp32 sums of a few thousand terms in another order: ~1e-6 of the largest gradient
        assert torch.allclose(x, y, rtol=1e-3, atol=1e-5 * scale), (i, float((x - y).abs().max()), scale)
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(a) == len(b) == 3
    for x, y in zip(a, b, strict=True):
        assert x["lm_loss"] == pytest.approx(y["lm_loss"], rel=1e-4)


def test_mlflow_logger_records_run(tmp_path):
    pytest.importorskip("mlflow")
    import mlflow

    from blip_core.tracking import MLflowLogger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    lg = MLflowLogger(experiment="test", run_name="r", tracking_uri=uri)
    lg.log_params({"train": {"lr": 0.1}})
    lg.log({"train/itc_loss": 1.5}, step=3)
    child = MLflowLogger(experiment="test", run_name="stage", tracking_uri=uri, parent_run_id=lg.run_id)
    child.log({"eval/test_tr_r1": 12.5}, step=0)
    (tmp_path / "eval_baseline.json").write_text("{}")
    child.log_artifact(tmp_path / "eval_baseline.json", name="evaluation.json")  # same name in every evaluation
    child.close()
    lg.close()
    client = mlflow.MlflowClient(uri)
    run = client.get_run(lg.run_id)
    assert run.data.metrics["train/itc_loss"] == 1.5 and run.data.params["train.lr"] == "0.1"
    assert run.info.status == "FINISHED"
    nested = client.get_run(child.run_id)
    assert nested.data.tags["mlflow.parentRunId"] == lg.run_id and nested.data.metrics["eval/test_tr_r1"] == 12.5
    assert [a.path for a in client.list_artifacts(child.run_id)] == ["evaluation.json"]
    with pytest.raises(ValueError, match="invalid metric name"):
        MLflowLogger.log(lg, {"train//x": 1.0}, step=0)


def _nan_images_at(steps: set[int]):
    """A Trainer._forward that feeds NaN images at the given (1-based) steps."""
    real = Trainer._forward

    def forward(self, batch):
        if self.step + 1 in steps:
            batch = batch | {"images": torch.full_like(batch["images"], float("nan"))}
        return real(self, batch)

    return forward


def test_non_finite_steps_are_skipped_without_poisoning_the_model(tiny_world, tokenizer_dir, tmp_path, monkeypatch):
    import math

    from safetensors.torch import load_file

    monkeypatch.setattr(Trainer, "_forward", _nan_images_at({2, 3}))
    summary = run_training(_cfg(), [tiny_world / "coco_train"], tmp_path / "run", tokenizer=tokenizer_dir)
    assert summary["nonfinite_steps"] == 2 and summary["steps"] == 6
    losses = _losses(tmp_path / "run")
    assert [math.isfinite(r["loss"]) for r in losses] == [True, False, False, True, True, True]
    # no NaN reached the weights, the BatchNorm statistics or the feature queues
    for name, t in load_file(next((tmp_path / "run" / "model").glob("*.safetensors"))).items():
        if t.is_floating_point():
            assert torch.isfinite(t).all(), name


def test_too_many_non_finite_steps_in_a_row_stop_the_run_naming_the_step(tiny_world, tokenizer_dir, tmp_path,
                                                                           monkeypatch):  # fmt: skip
    monkeypatch.setattr(Trainer, "_forward", _nan_images_at({2, 3}))
    with pytest.raises(FloatingPointError, match=r"2 non-finite steps in a row, the last at step 3 \(epoch 0"):
        run_training(_cfg(max_nonfinite_steps=1), [tiny_world / "coco_train"], tmp_path / "run",
                     tokenizer=tokenizer_dir)  # fmt: skip


def test_running_out_of_device_memory_is_one_line_naming_the_batch_knob(tiny_world, tokenizer_dir, tmp_path,
                                                                        monkeypatch):  # fmt: skip
    """A CUDA out-of-memory error deep in a step reaches the user as one line: where, the batch size,
    and the params.yaml knob to lower (the same error object torch raises on a GPU)."""
    from blip_core.machine import DeviceOutOfMemory

    def oom(self, batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    monkeypatch.setattr(Trainer, "_forward", oom)
    with pytest.raises(DeviceOutOfMemory) as e:
        run_training(_cfg(task="caption"), [tiny_world / "coco_train"], tmp_path / "oom", tokenizer=tokenizer_dir)
    msg = str(e.value)
    assert msg.startswith("caption training, step 1: the device ran out of memory at finetune_caption.batch_size = 8")
    assert "lower finetune_caption.batch_size in params.yaml" in msg and "\n" not in msg
    assert "Tried to allocate 2.00 GiB" in msg


def test_fused_adamw_knob_is_the_same_update(tiny_world, tokenizer_dir):
    """train.fused_optimizer: auto (and on) is the fused AdamW, on CPU too; off is torch's default
    (per-tensor on CPU): both make the same update up to rounding."""
    from blip_core.train.entry import build_model
    from blip_core.train.optim import create_optimizer

    params = {}
    for mode in ("auto", "on", "off"):
        model, _ = build_model(_cfg(fused_optimizer=mode), init=None, tokenizer=tokenizer_dir)
        opt = create_optimizer(model, _cfg(fused_optimizer=mode))
        assert bool(opt.defaults.get("fused")) == (mode != "off")
        torch.manual_seed(1)
        for p in model.parameters():
            if p.requires_grad:
                p.grad = torch.randn_like(p)
        for _ in range(3):
            opt.step()
        params[mode] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.equal(params["auto"], params["on"])
    assert torch.allclose(params["auto"], params["off"], atol=1e-6)
    with pytest.raises(ValueError, match="fused_optimizer"):
        _cfg(fused_optimizer="yes")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU always trains under bf16: the CPU knob's test")
def test_cpu_bf16_knob_trains_under_autocast_only_where_asked(tiny_world, tokenizer_dir, tmp_path, monkeypatch):
    """train.cpu_bf16: off is fp32 (the parity path), on trains under bf16 autocast, auto only on a CPU
    with bf16 units. The bf16 run is another numeric path: its losses stay finite and near fp32's."""
    import blip_core.machine as machine_mod

    data = [tiny_world / "coco_train", tiny_world / "web"]
    fp32 = run_training(_cfg(max_steps=3), data, tmp_path / "fp32", tokenizer=tokenizer_dir)
    bf16 = run_training(_cfg(max_steps=3, cpu_bf16="on"), data, tmp_path / "bf16", tokenizer=tokenizer_dir)
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    first = [_losses(tmp_path / r)[0]["loss"] for r in ("fp32", "bf16")]
    assert all(torch.isfinite(torch.tensor(v)) for v in first)
    assert abs(first[0] - first[1]) < 0.05 * first[0]  # same batch, same start: bf16 rounding only
    for units, expected in ((False, "fp32"), (True, "bf16")):
        monkeypatch.setattr(machine_mod, "has_bf16_units", lambda units=units: units)
        out = run_training(_cfg(max_steps=1, cpu_bf16="auto"), data, tmp_path / f"auto{units}", tokenizer=tokenizer_dir)
        assert out["precision"] == expected
    with pytest.raises(ValueError, match="cpu_bf16"):
        _cfg(cpu_bf16="yes")


def test_a_qformer_starts_from_a_blip_pretraining_trains_on_its_frozen_tower_and_is_evaluated(
    tiny_world, tokenizer_dir, tmp_path
):
    """BLIP-2 stage 1 through the registry: a Q-Former config from the BLIP pre-training's (tower,
    text sizes, tokenizer), its weights converted (the queries, `ln_vision` and the query projection
    fresh), trained with its tower frozen and its tokens computed once per image, saved in our
    format, and evaluated as a retrieval model (ITC over the best query, ITM re-rank, probes)."""
    from blip_core.models.blip2.qformer import Blip2QFormer
    from flows.stages import stage_evaluate

    pre = tmp_path / "pre"
    run_training(_cfg(max_steps=2), [tiny_world / "coco_train"], pre, tokenizer=tokenizer_dir)
    cfg = _cfg(task="qformer", max_steps=3, vision_lr_scale=0.0, frozen_features_mb=64, epochs=1)
    s = run_training(cfg, [tiny_world / "coco_train"], tmp_path / "qf", init=pre / "model")
    assert s["steps"] == 3 and s["task"] == "qformer"
    assert s["frozen_features"] and s["frozen_features"][0]["hits"] + s["frozen_features"][0]["misses"] > 0
    losses = _losses(tmp_path / "qf")
    assert all(line["itc_loss"] > 0 and line["itm_loss"] > 0 and line["lm_loss"] > 0 for line in losses)
    model = load_pretrained(tmp_path / "qf" / "model")
    start = load_pretrained(pre / "model")
    assert type(model) is Blip2QFormer and model.cfg.num_query_tokens == 8
    tower, start_tower = model.visual_encoder.state_dict(), start.visual_encoder.state_dict()
    assert tower.keys() == start_tower.keys() and all(torch.equal(tower[k], start_tower[k]) for k in tower)  # frozen
    params = tmp_path / "p.yaml"
    params.write_text("evaluate:\n  batch_size: 4\n  k_test: 3\n  max_images: 6\n  max_length: 12\n")
    m = stage_evaluate([tmp_path / "qf" / "model"], [tiny_world / "val"], tmp_path / "eval.json", params=params)["val"]
    assert {"tr_r1", "ir_r1", "r_mean", "itm_binding_n", "itm_count_n"} <= set(m) and "cider" not in m
    # the BLIP pre-training itself is evaluated as BLIP's captioner and filter, not as a fresh Q-Former
    from blip_core.registry import evaluations

    assert {t.name for t in evaluations("pretrain", "pairs")} == {"caption", "retrieval"}


@pytest.mark.parametrize("task", ["caption", "retrieval"])
def test_a_fine_tune_with_count_statements_reads_the_label_only_folder(tiny_world, tokenizer_dir, tmp_path, task):
    """Statements of the `objects` images join each batch (its read counts in the summary); a
    label-only folder without the knob, or the knob without one, is refused before training."""
    data = [tiny_world / "coco_train", tiny_world / "objects"]
    kw = dict(task=task, max_steps=2, ckpt_every=2, itm_swap_negatives=task == "retrieval")
    summary = run_training(_cfg(count_statements=8, **kw), data, tmp_path / "on", tokenizer=tokenizer_dir)
    assert summary["read_count_statements"]["num_ok"] >= 2 * 8 and summary["steps"] == 2
    for cfg, dirs in ((_cfg(**kw), data), (_cfg(count_statements=8, **kw), data[:1])):
        with pytest.raises(ValueError, match="label-only folders"):
            run_training(cfg, dirs, tmp_path / "bad", tokenizer=tokenizer_dir)
