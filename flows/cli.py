"""`blip`: the project's one console script; its subcommands are the pipeline's stage entry points.

`blip stage NAME` runs a stage exactly as flows/dag.py describes it (dvc.yaml's commands); the
Prefect flow runs the same descriptions. The other subcommands call the same stage functions with
paths of your choosing. Runs change through presets and `params.yaml`, so flags stay few.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

PARAMS_HELP = "params file whose sections hold every knob (default: ./params.yaml if present, else built-in defaults)"


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def _cmd_world(args: argparse.Namespace) -> int:
    from flows.stages import stage_world

    summary = stage_world(args.out, params=args.params, seed=args.seed, scale=args.scale, num_workers=args.workers)
    _print({"out": str(args.out), "splits": summary["splits"]})
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from blip_core.data.importers import common, pairs

    src = Path(args.src)
    kw = {"shard_size": args.shard_size}
    if args.format != "img2dataset":
        kw["max_json_bytes"] = int(args.max_json_mb * 2**20)
    if args.format == "coco":
        report = pairs.import_coco(src, args.images or src.parent, args.out, split=args.split or "coco", **kw)
    elif args.format == "karpathy":
        if args.images is None:
            raise ValueError("blip import karpathy needs --images (the COCO image root holding train2014/, val2014/)")
        report = pairs.import_karpathy(src, args.images, args.out, **kw)
    elif args.format == "blip-json":
        report = pairs.import_blip_json(src, args.images or src.parent, args.out, split=args.split or "train", **kw)
    else:
        if args.out is not None and Path(args.out).resolve() != src.resolve():
            raise ValueError("blip import img2dataset indexes a shard folder in place: omit --out or pass SRC again")
        report = pairs.index_img2dataset(src)
    _print(report.to_dict())
    if report.rejected:
        where = ", ".join(report.outputs)
        print(f"rejected {report.num_rejected} records ({report.rejected_by_reason()}); see {common.REJECTED_FILE} "
              f"in {where}", file=sys.stderr)  # fmt: skip
    return 0


def _cmd_import_task(args: argparse.Namespace) -> int:
    from blip_core.data.importers import common, nlvr, vqa

    kw = {"split": args.split, "max_side": args.max_side, "limit": args.limit, "shard_size": args.shard_size,
          "max_json_bytes": int(args.max_json_mb * 2**20)}  # fmt: skip
    if args.command == "import-vqa" and args.layout == "public":
        report = vqa.import_vqa_v2(args.src, args.images, args.out, annotations_file=args.annotations, **kw)
    elif args.command == "import-vqa":
        if args.annotations is not None:
            raise ValueError("blip import-vqa --layout blip: BLIP's json holds the answers; omit --annotations")
        report = vqa.import_blip_vqa_json(args.src, args.images, args.out, **kw)
    elif args.layout == "public":
        report = nlvr.import_nlvr2(args.src, args.images, args.out, **kw)
    else:
        report = nlvr.import_blip_nlvr_json(args.src, args.images, args.out, **kw)
    _print(report.to_dict())
    if report.rejected:
        print(f"rejected {report.num_rejected} records ({report.rejected_by_reason()}); see {common.REJECTED_FILE} "
              f"in {', '.join(report.outputs)}", file=sys.stderr)  # fmt: skip
    return 0


def _cmd_tokenizer(args: argparse.Namespace) -> int:
    from flows.stages import stage_tokenizer

    summary = stage_tokenizer(args.data, args.out, params=args.params)
    _print({"out": str(args.out), "vocab_size": summary["vocab_size"], "num_captions": summary["num_captions"]})
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from flows.stages import stage_inspect

    _print(stage_inspect(args.data, params=args.params, out_file=args.out))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from flows.stages import stage_train

    summary = stage_train(
        args.task,
        args.data,
        args.out,
        params=args.params,
        section=args.section,
        preset=args.preset,
        init=args.init,
        tokenizer=args.tokenizer,
        vision_init=args.vision_init,
        resume=args.resume,
    )
    _print({k: v for k, v in summary.items() if k != "read"})
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from flows.stages import stage_evaluate

    _print(stage_evaluate(args.model, args.data, args.out, params=args.params))
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from flows.stages import stage_convert

    _print(
        stage_convert(
            args.src,
            args.out,
            src_format=args.src_format,
            dst_format=args.to,
            kind=args.kind,
            preset=args.preset,
            tokenizer=args.tokenizer,
        )
    )
    return 0


def _cmd_capfilt(args: argparse.Namespace) -> int:
    from flows import stages

    if args.step == "audit":  # reads the selection only: no models, params or policy
        _print(stages.stage_capfilt_audit(args.web, args.work, out_dir=args.out))
        return 0
    models = {"captioner": getattr(args, "captioner", None), "filter_model": getattr(args, "filter", None)}
    common = {"params": args.params, "policy": args.policy}
    if args.step in ("caption", "filter"):
        result = stages.stage_capfilt_score(
            args.web, args.work, step=args.step, calibration_dir=getattr(args, "calibration", None), **models, **common
        )
    elif args.step == "select":
        result = stages.stage_capfilt_select(args.web, args.work, metrics_dir=args.metrics, threshold=args.threshold,
                                             **common)  # fmt: skip
    elif args.step == "reshard":
        result = stages.stage_capfilt_reshard(args.human, args.web, args.work)
    else:
        result = stages.stage_capfilt_run(args.human, args.web, args.work, metrics_dir=args.metrics,
                                          threshold=args.threshold, calibration_dir=args.calibration, **models,
                                          **common)  # fmt: skip
    _print(result)
    return 0


def _cmd_stage(args: argparse.Namespace) -> int:
    from flows import dag

    stage = dag.by_name(args.name, params=str(args.params), root=str(args.root))
    _print(stage.run())
    return 0


def _cmd_dag(args: argparse.Namespace) -> int:
    from flows import dag

    if args.dvc:
        sys.stdout.write(dag.dvc_yaml())
        return 0
    for s in dag.stages():
        print(f"{s.name:<32} deps: {', '.join(s.deps) or '-'}\n{'':<32} outs: {', '.join(s.outputs) or '-'}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from flows.stages import stage_validate
    from flows.validation import format_report

    result = stage_validate(args.kind, args.path, params=args.params, out_file=args.out, gx_root=args.gx_root)
    for r in result["suites"]:
        print(format_report(r))
    return 0


def _cmd_leakage(args: argparse.Namespace) -> int:
    from flows.stages import stage_leakage

    result = stage_leakage(args.eval, args.pool, params=args.params, out_file=args.out)
    _print({k: v for k, v in result.items() if k != "pool"})
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from flows.stages import stage_report

    print(stage_report(args.baseline, args.bootstrapped, args.out)["markdown"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blip",
        description="BLIP + CapFilt pipeline stages. Knobs live in params.yaml; flags are operational only.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("world", help="generate the embedded image-caption world (one folder per split)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--seed", type=int, default=None, help="override world.seed")
    p.add_argument("--scale", type=float, default=None, help="multiply the split sizes (0.01 = a few dozen images)")
    p.add_argument("--workers", type=int, default=None, help="override world.num_workers")
    p.add_argument("--params", type=Path, default=None, help=PARAMS_HELP)
    p.set_defaults(func=_cmd_world)

    p = sub.add_parser("import", help="import real data into shards: coco | karpathy | blip-json | img2dataset")
    p.add_argument("format", choices=["coco", "karpathy", "blip-json", "img2dataset"])
    p.add_argument("src", help="annotation json (coco, karpathy, blip-json) or shard folder (img2dataset)")
    p.add_argument("--out", type=Path, default=None, help="output folder (not for img2dataset: indexed in place)")
    p.add_argument("--images", type=Path, default=None, help="image root (default: the json's folder)")
    p.add_argument("--split", default=None, help="split name written into the manifest")
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--max-json-mb", type=float, default=512,
                   help="refuse annotation files larger than this before parsing (default 512)")  # fmt: skip
    p.set_defaults(func=_cmd_import)
    for name, task, split, src_help, images_help in (
        ("import-vqa", "VQA v2", "vqa_val",
         "VQA v2 questions json (--layout blip: BLIP's vqa_*.json)",
         "COCO image folder (val2014/ or its parent); --layout blip: the root BLIP's image paths start from"),
        ("import-nlvr", "NLVR2", "nlvr_dev",
         "NLVR2 json-lines train.json / dev.json / test1.json (--layout blip: BLIP's nlvr_*.json)",
         "NLVR2 image root, searched recursively (train/0..99/, dev/, test1/); --layout blip: the paths' root"),
    ):  # fmt: skip
        p = sub.add_parser(name, help=f"import {task} annotations + images into task-item shards")
        p.add_argument("src", type=Path, help=src_help)
        p.add_argument("--images", required=True, type=Path, help=images_help)
        p.add_argument("--out", required=True, type=Path, help="output folder")
        p.add_argument("--layout", choices=["public", "blip"], default="public", help="annotation layout of SRC")
        if name == "import-vqa":
            p.add_argument("--annotations", type=Path, default=None,
                           help="VQA v2 annotations json (omit for test-dev: questions without answers)")  # fmt: skip
        p.add_argument("--split", default=split, help=f"split name written into _stats.json (default {split})")
        p.add_argument("--max-side", type=int, default=384, help="downscale images to this longer side (0: keep)")
        p.add_argument("--limit", type=int, default=0, help="read only the first N records (0: all)")
        p.add_argument("--shard-size", type=int, default=1000)
        p.add_argument("--max-json-mb", type=float, default=512,
                       help="refuse annotation files larger than this before parsing (default 512)")  # fmt: skip
        p.set_defaults(func=_cmd_import_task)

    p = sub.add_parser("tokenizer", help="train the WordPiece tokenizer on shard captions")
    p.add_argument("--data", nargs="+", required=True, type=Path, help="training shard folders")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--params", type=Path, default=None, help=PARAMS_HELP)
    p.set_defaults(func=_cmd_tokenizer)

    p = sub.add_parser("inspect", help="read shard folders with the guarded reader; print counts and skips")
    p.add_argument("data", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=None, help="also write the report as JSON (DVC metrics)")
    p.add_argument("--params", type=Path, default=None, help=PARAMS_HELP)
    p.set_defaults(func=_cmd_inspect)
    from blip_core.registry import tasks, trainable_tasks

    p = sub.add_parser("train", help="pre-train or fine-tune, or train the vision start (knobs from params.yaml)")
    p.add_argument("--task", required=True, choices=trainable_tasks(),
                   help="; ".join(f"{t.name}: {t.about}" for t in tasks().values() if t.trainable))  # fmt: skip
    p.add_argument("--data", nargs="+", required=True, type=Path, help="training shard (or task item) folders")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints/, model/, losses.jsonl)")
    p.add_argument("--preset", default=None, help="model preset (overrides the params section): tiny, base, large")
    p.add_argument("--init", type=Path, default=None, help="start from this checkpoint directory")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer directory (from scratch)")
    p.add_argument("--vision-init", type=Path, default=None,
                   help="from scratch, the vision tower starts from this: a vision checkpoint folder (blip train "
                        "--task vision) or a timm-layout state dict, e.g. DeiT-B for --preset base")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--params", type=Path, default=None, help=PARAMS_HELP)
    p.add_argument("--section", default=None, help="params section (default: the task's, e.g. finetune_vqa)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="each model on each folder its task evaluates (retrieval, captioning, VQA, "
        "NLVR², zero-shot video retrieval) -> one JSON file",
    )
    p.add_argument("--model", nargs="+", required=True, type=Path, help="checkpoint directories")
    p.add_argument("--data", nargs="+", required=True, type=Path, help="evaluation split folders (test, novel, ...)")
    p.add_argument("--out", required=True, type=Path, help="metrics JSON file")
    p.add_argument("--params", type=Path, default=None, help=PARAMS_HELP)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("convert", help="convert checkpoints: official BLIP .pth / HF dir / ours -> ours or HF")
    p.add_argument("src", type=Path, help="checkpoint file (blip) or directory (hf, ours)")
    p.add_argument("--from", dest="src_format", required=True, choices=["blip", "hf", "ours"])
    p.add_argument("--to", default="ours", choices=["ours", "hf"])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument(
        "--kind",
        choices=["pretrain", "captioner", "retrieval"],
        default=None,
        help="model to build (needed for official BLIP; splits a pre-training checkpoint of ours)",
    )
    p.add_argument("--preset", default="base", help="architecture of an official checkpoint: base or large")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer directory to use and copy")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("capfilt", help="CapFilt: caption + filter the web pool, select, reshard (or `run` all)")
    steps = p.add_subparsers(dest="step", required=True, metavar="STEP")
    helps = {
        "caption": "write synthetic captions for every web shard (nucleus sampling, capfilt.* knobs)",
        "filter": "score web and synthetic captions with the filter (ITM p(match), ITC cosine)",
        "select": "keep captions by policy and threshold from the stored scores (no model runs)",
        "reshard": "write the bootstrapped shards: human splits unfiltered + kept web captions",
        "run": "caption, filter, select and reshard in one go",
        "audit": "write the audit page (HTML, offline): each caption's image, scores and decision",
    }
    for step, text in helps.items():
        q = steps.add_parser(step, help=text, description=text)
        q.add_argument("--web", required=True, type=Path, help="web shard folder")
        q.add_argument("--work", required=True, type=Path, help="CapFilt work folder (captions/, scores/, shards/)")
        if step in ("reshard", "run"):
            q.add_argument("--human", nargs="*", type=Path, default=[], help="human-captioned folders, kept unfiltered")
        if step in ("caption", "filter", "run"):
            q.add_argument("--captioner", type=Path, default=None, required=step == "caption",
                           help="fine-tuned captioner checkpoint")  # fmt: skip
            q.add_argument("--filter", type=Path, required=True, help="fine-tuned filter (retrieval) checkpoint")
        if step in ("filter", "run"):
            q.add_argument("--calibration", type=Path, default=None,
                           help="clean held-out split (threshold_mode calibrated), e.g. val")  # fmt: skip
        if step in ("select", "run"):
            q.add_argument("--metrics", type=Path, default=Path("data/metrics/capfilt"),
                           help="quality JSON + plots folder")  # fmt: skip
            q.add_argument("--threshold", type=float, default=None, help="override capfilt.threshold")
        if step == "audit":
            q.add_argument("--out", type=Path, default=None, help="page folder (default: <work>/audit)")
            q.set_defaults(func=_cmd_capfilt)
            continue
        q.add_argument(
            "--policy", default=None, help="override capfilt.policy: none|filter|captioner|both|clip_score|top_k"
        )
        q.add_argument("--params", type=Path, default=None, help=PARAMS_HELP)
        q.set_defaults(func=_cmd_capfilt)

    p = sub.add_parser("validate", help="Great Expectations gates; exits 1 when an expectation fails")
    p.add_argument("kind", choices=["raw", "capfilt"])
    p.add_argument("path", type=Path, help="raw shard folder, or a CapFilt work folder")
    p.add_argument("--out", type=Path, default=None, help="JSON report")
    p.add_argument("--params", type=Path, default=None, help=PARAMS_HELP)
    p.add_argument("--gx-root", type=Path, default=None,
                   help="folder that holds (or gets) the GX context gx/ and its Data Docs (default: the current "
                        "folder, or BLIP_GX_ROOT)")  # fmt: skip
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("leakage", help="evaluation images found in the pre-training pool (content hash)")
    p.add_argument("--eval", nargs="+", required=True, type=Path, help="val/test/novel folders")
    p.add_argument("--pool", nargs="+", required=True, type=Path, help="pre-training shard folders")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--params", type=Path, default=None, help=PARAMS_HELP)
    p.set_defaults(func=_cmd_leakage)

    p = sub.add_parser("report", help="baseline vs bootstrapped comparison table (json, csv, markdown)")
    p.add_argument("--baseline", required=True, type=Path, help="evaluation JSON of the baseline")
    p.add_argument("--bootstrapped", required=True, type=Path, help="evaluation JSON of the bootstrapped model")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("stage", help="run one pipeline stage as flows/dag.py describes it (what dvc.yaml calls)")
    p.add_argument("name", help="stage name (blip dag lists them)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    p.add_argument("--root", type=Path, default=Path("data"), help="data root of the layout (default: data)")
    p.set_defaults(func=_cmd_stage)

    p = sub.add_parser("tracking", help="MLflow records buffered while the store failed: list or send them")
    p.add_argument("action", choices=["list", "replay"])
    p.add_argument("files", nargs="*", type=Path, help="buffer files (default: every file in mlflow/buffer)")
    p.set_defaults(func=_cmd_tracking)

    p = sub.add_parser("dag", help="list the pipeline's stages, or print dvc.yaml generated from them (--dvc)")
    p.add_argument("--dvc", action="store_true", help="print the dvc.yaml that flows/dag.py describes")
    p.set_defaults(func=_cmd_dag)
    return parser


def _cmd_tracking(args: argparse.Namespace) -> int:
    from blip_core.tracking import DEFAULT_BUFFER_DIR, replay_buffer

    files = args.files or sorted(Path(DEFAULT_BUFFER_DIR).glob("*.jsonl"))
    if args.action == "list":
        _print({str(f): sum(1 for line in f.read_text().splitlines() if line.strip()) for f in files})
        return 0
    sent = {str(f): replay_buffer(f) for f in files}
    _print({"sent": sent})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "import" and args.format != "img2dataset" and args.out is None:
        parser.error(f"blip import {args.format} needs --out DIR")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    from blip_core.fileio import DiskFullError
    from blip_core.machine import DeviceOutOfMemory
    from flows.validation import DataQualityError

    try:
        return args.func(args)
    except DataQualityError as e:
        # a data-quality gate failed: the readable report, exit 1 (DVC and CI stop here)
        print(f"blip {args.command}: FAILED\n{e}", file=sys.stderr)
        return 1
    except (FileNotFoundError, NotADirectoryError, ValueError, DiskFullError, DeviceOutOfMemory) as e:
        # user errors: one clear line, no traceback
        print(f"blip {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
