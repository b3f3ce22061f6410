"""The pipeline DAG, described once: both runners are derived from `stages()`.

    world -> tokenizer, inspect_world, validate_raw, leakage, pretrain_vision -> pretrain_baseline
      -> finetune_{caption,retrieval}_baseline -> capfilt_score -> capfilt_select -> capfilt_reshard
      -> validate_capfilt -> pretrain_bootstrapped -> finetune_{caption,retrieval}_bootstrapped
      -> evaluate_{baseline,bootstrapped} -> report

`pretrain_vision` (the supervised vision start both pre-trainings load, BLIP's ImageNet/DeiT role)
is in the DAG when params.yaml's `pretrain.vision_init` names it; a path there is a plain dependency.

The bootstrap chain is written as round k (`capfilt_round`: score, select, reshard, gate with a
captioner and a filter; `bootstrapped_round`: the re-pre-training and its fine-tunes), the
paper's one round being k = 1; `Layout` places round k > 1 beside it (`capfilt_r<k>/`,
`runs/bootstrapped_r<k>/`; `capfilt.rounds` adds them). A study's arms (flows.studies) each run under their own root.

Each `Stage` names its function (a `flows.stages` function), the keyword arguments it is called
with, the data it reads and writes, the params.yaml keys it reads and the source it runs (one file
per module its function reaches, flows.codedeps). From that one list:
- `dvc.yaml` is generated (`blip dag --dvc > dvc.yaml`; a test fails when the file differs), and
  each DVC stage's command is `blip stage NAME`, which calls the function with these kwargs;
- the Prefect flow (`flows.bootstrap`) runs the same list in order, caching each task on the hash of
  its deps, params and code, so an edit to a library file re-runs the stages that use it under
  both runners. Prefect may run a stage differently (CapFilt scoring is mapped per shard), never
  with other inputs or outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from blip_core import capfilt
from flows import stages as fns
from flows.codedeps import code_hash, code_of  # noqa: F401  (code_hash: the runners' cache keys)


@dataclass(frozen=True)
class Layout:
    """Where every stage reads and writes, under one data root."""

    root: str = "data"

    def p(self, *parts: str) -> str:
        return str(Path(self.root, *parts))

    def split(self, name: str) -> str:
        return self.p("world", name)

    def run(self, model: str, task: str) -> str:
        return self.p("runs", model, task)

    def model(self, model: str, task: str) -> str:
        return self.p("runs", model, task, "model")

    @property
    def world(self) -> str:
        return self.p("world")

    @property
    def tokenizer(self) -> str:
        return self.p("tokenizer")

    @property
    def metrics(self) -> str:
        return self.p("metrics")

    @staticmethod
    def round_suffix(k: int) -> str:
        """Nothing for the paper's one round of bootstrapping, "_r<k>" for round k > 1 (folders,
        variants, stage names)."""
        if k < 1:
            raise ValueError(f"bootstrapping rounds count from 1, got {k}")
        return "" if k == 1 else f"_r{k}"

    def variant(self, k: int = 1) -> str:
        """The models of round k: "bootstrapped" (round 1), "bootstrapped_r2", ..."""
        return "bootstrapped" + self.round_suffix(k)

    def gate(self, k: int = 1) -> str:
        """Round k's Great Expectations report on its CapFilt output."""
        return self.p("metrics", f"validate_capfilt{self.round_suffix(k)}.json")

    def capfilt(self, k: int = 1) -> str:
        """Round k's CapFilt work folder."""
        return self.p("capfilt" + self.round_suffix(k))

    def cf(self, name: str, k: int = 1) -> str:
        """A file or folder of round k's CapFilt work folder (names: blip_core.capfilt)."""
        return str(Path(self.capfilt(k), name))

    def bootstrapped(self, k: int = 1) -> str:
        """Round k's bootstrapped webdataset (human split + kept web captions)."""
        return self.cf(capfilt.SHARDS, k)

    def quality(self, k: int = 1) -> str:
        return self.p("metrics", "capfilt" + self.round_suffix(k), capfilt.QUALITY_FILE)

    def evaluation(self, model: str) -> str:
        return self.p("metrics", f"eval_{model}.json")

    @property
    def report(self) -> str:
        return self.p("metrics", "report")


@dataclass(frozen=True)
class Registers:
    """The model a stage trains becomes a version of a registered model (flows.model_registry)."""

    role: str
    """What the model is for (the task's `role`; "bootstrapped" for the bootstrapped pre-training)."""
    name: str
    """Its registered model in MLflow's registry (`Task.registered_name`, e.g. "blip-filter")."""
    variant: str
    """baseline | bootstrapped | bootstrapped_r<k> | vision: the model folder in the layout, and its
    report column."""
    metric: str
    """"<split>/<metric>" of the comparison rows that the `best` alias follows."""
    about: str
    """What the model is and what it was trained on, for the version's description."""


@dataclass(frozen=True, kw_only=True)
class Stage:
    """One pipeline step, as both runners see it."""

    name: str
    fn: Callable[..., Any]
    kwargs: dict[str, Any]
    """The call: `fn(**kwargs)` (paths under the layout root, the params file included)."""
    deps: tuple[str, ...]
    """Data the stage reads (files or folders written by earlier stages)."""
    outs: tuple[str, ...] = ()
    """What it writes (DVC-cached outputs)."""
    params: tuple[str, ...] = ()
    """params.yaml sections or `section.key`s it reads."""
    metrics: tuple[str, ...] = ()
    """Small JSON results of numbers only (DVC metrics, never cached)."""
    reports: tuple[str, ...] = ()
    """JSON reports that hold text too, e.g. a gate's expectations (DVC outs, never cached): `dvc
    metrics show` then lists numbers only."""
    plots: tuple[str, ...] = ()
    persist: bool = False
    """Outputs survive a re-run (per-shard files named by input hashes: a killed run resumes)."""
    gpu: bool = False
    """Holds the accelerator (Prefect tag `gpu`, limited to one task at a time)."""
    tasks: tuple[str, ...] = ()
    """The registered tasks (blip_core.registry) whose models it trains or runs (CapFilt's captioner
    and filter): their model, conversion and training code is its code."""
    evaluates: tuple[str, ...] = ()
    """The registered tasks it evaluates: their training and evaluation code is its code."""
    mapped: bool = False
    """Prefect runs it mapped, one task per shard (flows.capfilt_flow); DVC runs the plain call."""
    artifacts: tuple[tuple[str, str | None], ...] = ()
    """(file, name or None to keep its own) the stage's MLflow run logs, besides its JSON/PNG/MD
    outputs; both evaluations log the same names, so MLflow's compare view pairs them."""
    data_docs: bool = False
    """It validates with Great Expectations: its MLflow run logs the Data Docs site."""
    registers: Registers | None = None
    """The model it trains (its first out) becomes a version in the model registry."""
    comment: str = ""
    extra_dvc: dict[str, Any] = field(default_factory=dict)

    @property
    def code_deps(self) -> tuple[str, ...]:
        """The source it runs, derived from what `fn` imports and its `tasks`' entries (see `code_of`)."""
        return code_of(self.fn, self.tasks, self.evaluates)

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.outs + self.reports + self.metrics + self.plots

    def run(self, **extra: Any) -> Any:
        """`fn(**kwargs, **extra)` (extra: a runner's own, e.g. the metric logger), reading only the
        params it declares (flows.stages.params.declared_params)."""
        from flows.stages.params import declared_params

        with declared_params(self.name, self.params):
            return self.fn(**self.kwargs, **extra)


def _shape(params: str) -> tuple[str, list[str], int, set[str]]:
    """The params.yaml knobs that shape the DAG, from one read of the file: `pretrain.vision_init`,
    `downstream.tasks` (in registry order), `capfilt.rounds` and the CapFilt fine-tunes' sections with
    `count_statements` (they read the `objects` split too); "", none, 1 and none without a file."""
    from blip_core.config.loader import from_dict, read_params
    from blip_core.config.pipeline import CapFiltConfig, DownstreamConfig
    from blip_core.config.train import TrainConfig
    from blip_core.registry import task_for_role, tasks

    if not Path(params).is_file():
        return "", [], 1, set()
    doc = read_params(params)

    def section(name: str, cls: type) -> Any:
        return from_dict(cls, doc.get(name, {}) or {}, section=name)

    chosen = section("downstream", DownstreamConfig).tasks
    capfilt_sections = [task_for_role(role).section for role in ("captioner", "filter")]
    statements = {s for s in capfilt_sections if section(s, TrainConfig).count_statements}
    return (section("pretrain", TrainConfig).vision_init, [t for t in tasks() if t in chosen],
            section("capfilt", CapFiltConfig).rounds, statements)  # fmt: skip


def stages(params: str = "params.yaml", root: str = "data") -> list[Stage]:
    """Every stage in an order that respects the dependencies."""
    from blip_core.config.train import VISION_STAGE
    from blip_core.registry import get_task, task_for_role

    L = Layout(root)
    m = L.metrics
    human, web, val = L.split("coco_train"), L.split("web"), L.split("val")
    pool = [human, web]
    evals = [val, L.split("test"), L.split("novel")]
    objects = L.split("objects")
    vision_init, chosen, rounds, with_statements = _shape(params)
    downstream = [get_task(t) for t in chosen]
    out: list[Stage] = [
        Stage(name="world", fn=fns.stage_world, kwargs={"out_dir": L.world, "params": params}, deps=(),
              outs=(L.world,), params=("world",),
              comment="the generated image-caption world: clean splits, the noisy web pool, the objects split, "
                      "the downstream tasks' items"),
        Stage(name="tokenizer", fn=fns.stage_tokenizer,
              kwargs={"data_dirs": pool, "out_dir": L.tokenizer, "params": params}, deps=tuple(pool),
              outs=(L.tokenizer,), params=("tokenizer",), comment="WordPiece vocabulary trained on the captions"),
        Stage(name="inspect_world", fn=fns.stage_inspect, kwargs={"data_dirs": [*pool, *evals], "params": params,
              "out_file": f"{m}/world_read.json"}, deps=(L.world,), params=("reader",),
              metrics=(f"{m}/world_read.json",), comment="every split read as training reads it: counts and skips"),
        Stage(name="validate_raw", fn=fns.stage_validate, kwargs={"kind": "raw", "path": web, "params": params,
              "out_file": f"{m}/validate_raw.json"}, deps=(web,), params=("validate", "reader"),
              reports=(f"{m}/validate_raw.json",), data_docs=True,
              comment="Great Expectations gate on the raw web pool: fails the pipeline on bad data"),
        Stage(name="leakage", fn=fns.stage_leakage, kwargs={"eval_dirs": evals, "pool_dirs": [*pool, objects],
              "params": params, "out_file": f"{m}/leakage.json"}, deps=(L.world,),
              params=("validate.max_leaked_images",),
              reports=(f"{m}/leakage.json",),
              comment="evaluation images found in the pre-training pool (content hash)"),
    ]  # fmt: skip
    vision = None  # what the pre-trainings' vision tower starts from (a folder or file), if anything
    if vision_init == VISION_STAGE:
        vision = L.model("vision", "pretrain")
        t = get_task("vision")
        out.append(Stage(name=VISION_STAGE, fn=fns.stage_pretrain_vision, kwargs={"data_dirs": [objects], "out_dir":
                         L.run("vision", "pretrain"), "eval_dir": val, "params": params, "resume": "auto"},
                         deps=(objects, val), outs=(vision,), params=(t.section,), gpu=True, tasks=("vision",),
                         artifacts=((f"{L.run('vision', 'pretrain')}/resolved_config.json", None),),
                         registers=Registers(t.role, t.registered_name(), "vision", t.registry_metric, t.about),
                         comment=f"the {t.about} (BLIP: ImageNet DeiT weights)"))  # fmt: skip
    elif vision_init:
        vision = vision_init

    def train(model: str, task: str, data: list[str], init: str | None, gates: list[str]) -> Stage:
        t = get_task(task)
        kwargs = {
            "task": task,
            "data_dirs": data,
            "out_dir": L.run(model, task),
            "params": params,
            "section": t.section,
            "resume": "auto",
        }  # a killed run of the same config and data continues from its checkpoint
        kwargs |= {"init": init} if init else {"tokenizer": L.tokenizer}
        starts = []
        if not init and vision is not None:  # both pre-trainings load the same vision start
            starts.append(vision)
            if vision_init == VISION_STAGE:
                kwargs["vision_init"] = vision
        name = "pretrain" if task == "pretrain" else f"finetune_{task}"
        if task == "pretrain":
            pool_text = "human + raw web" if model == "baseline" else "human + CapFilt-kept"
            what = f"{t.about} on {pool_text} captions"
        else:
            what = f"{t.about}, from the {model} pre-training"
        role = t.role  # baseline and bootstrapped: two versions of one registered model (tag `variant`)
        return Stage(name=f"{name}_{model}", fn=fns.stage_train, kwargs=kwargs,
                     deps=(*data, init or L.tokenizer, *starts, *gates),
                     outs=(L.model(model, task),), params=(t.section,), gpu=True, tasks=(task,),
                     artifacts=((f"{L.run(model, task)}/resolved_config.json", None),),
                     registers=Registers(role, t.registered_name(role), model, t.registry_metric, what),
                     comment=what)  # fmt: skip

    capfilt_tasks = [task_for_role("captioner"), task_for_role("filter")]  # the two models CapFilt needs
    downstream_ft = [t for t in downstream if t.trainable]

    def finetunes(model: str, tasks: list) -> list[Stage]:
        pre = L.model(model, "pretrain")
        return [train(model, t.name, [L.split(t.train_split or "coco_train"),
                                      *([objects] if t.section in with_statements else [])], pre, [])
                for t in tasks]  # fmt: skip

    gates_raw = [f"{m}/validate_raw.json", f"{m}/leakage.json"]
    out.append(train("baseline", "pretrain", pool, None, gates_raw))
    out += finetunes("baseline", capfilt_tasks)

    def capfilt_round(k: int, captioner: str, filt: str) -> list[Stage]:
        """Round k of CapFilt on the web pool with this captioner and filter (round 1: the baseline's
        fine-tunes; a round k > 1 would take round k-1's): score, select, reshard, the gate."""
        r = L.round_suffix(k)
        work, metrics_dir = L.capfilt(k), str(Path(L.quality(k)).parent)
        cf = {"web_dir": web, "work_dir": work, "params": params}
        scoring = ("capfilt.policy", "capfilt.threshold_mode", "capfilt.num_captions", "capfilt.top_p",
                   "capfilt.max_length", "capfilt.min_length", "capfilt.repetition_penalty",
                    "capfilt.caption_batch_size", "capfilt.filter_batch_size", "capfilt.caption_bf16",
                   "capfilt.seed")  # fmt: skip
        scores, selection, meta = (
            L.cf(capfilt.SCORE_INDEX, k),
            L.cf(capfilt.SELECTION, k),
            L.cf(capfilt.SELECTION_META, k),
        )
        plots, gate = f"{metrics_dir}/plots", L.gate(k)
        return [
            Stage(name=f"capfilt_score{r}", fn=fns.stage_capfilt_score,
                  kwargs=cf | {"captioner": captioner, "filter_model": filt, "calibration_dir": val},
                  deps=(web, val, captioner, filt),
                  outs=tuple(L.cf(d, k) for d in (capfilt.CAPTIONS, capfilt.SCORES, capfilt.CALIBRATION,
                                                  capfilt.SCORE_INDEX)),
                  params=scoring, persist=True, gpu=True, mapped=True, tasks=tuple(t.name for t in capfilt_tasks),
                  comment="captioner writes synthetic captions, filter scores web + synthetic (per shard)"),
            Stage(name=f"capfilt_select{r}", fn=fns.stage_capfilt_select, kwargs=cf | {"metrics_dir": metrics_dir},
                  deps=(scores, L.cf(capfilt.SCORES, k), L.cf(capfilt.CALIBRATION, k)),
                  outs=(selection, meta),
                  params=("capfilt.policy", "capfilt.threshold", "capfilt.threshold_mode",
                          "capfilt.calibration_quantile", "capfilt.clip_keep_fraction", "capfilt.max_synthetic",
                          "capfilt.top_k", "capfilt.top_k_score", "capfilt.min_confidence"),
                  metrics=(L.quality(k),),
                  plots=(f"{plots}/score_hist.png", f"{plots}/precision_recall.png", f"{plots}/noise_by_type.png"),
                  comment="the policy on stored scores: seconds, no model run"),
            Stage(name=f"capfilt_audit{r}", fn=fns.stage_capfilt_audit, kwargs={"web_dir": web, "work_dir": work},
                  deps=(selection, meta, web), outs=(L.cf(capfilt.AUDIT, k),),
                  comment="the audit page: each caption's image, scores and decision (static HTML, offline)"),
            Stage(name=f"capfilt_reshard{r}", fn=fns.stage_capfilt_reshard,
                  kwargs={"human_dirs": [human], "web_dir": web, "work_dir": work},
                  deps=(selection, scores, human, web), outs=(L.bootstrapped(k),),
                  comment="bootstrapped webdataset: human split unfiltered + kept web images"),
            Stage(name=f"validate_capfilt{r}", fn=fns.stage_validate,
                  kwargs={"kind": "capfilt", "path": work, "params": params, "out_file": gate},
                  deps=(L.bootstrapped(k), selection, meta),
                  params=("validate", "capfilt.policy", "capfilt.threshold", "capfilt.max_length"),
                  reports=(gate,), data_docs=True, comment="Great Expectations gate on the CapFilt output"),
        ]  # fmt: skip

    def bootstrapped_round(k: int) -> list[Stage]:
        """Round k's re-pre-training on its kept set (after its gate) and the fine-tunes from it;
        a round after the first registers no model (its versions would carry no score to rank by)."""
        trained = [train(L.variant(k), "pretrain", [L.bootstrapped(k)], None, [L.gate(k)])]
        trained += finetunes(L.variant(k), capfilt_tasks + downstream_ft)
        return trained if k == 1 else [dataclasses.replace(s, registers=None) for s in trained]

    out += capfilt_round(1, *(L.model("baseline", t.name) for t in capfilt_tasks))
    out += finetunes("baseline", downstream_ft)  # after CapFilt: its scoring waits on none of them
    out += bootstrapped_round(1)
    for k in range(2, rounds + 1):  # CapFilt again with the previous round's fine-tunes
        out += capfilt_round(k, *(L.model(L.variant(k - 1), t.name) for t in capfilt_tasks))
        out += bootstrapped_round(k)
    tests = [L.split("test"), L.split("novel")] + [L.split(s) for t in downstream for s in t.eval_splits]
    extra = "".join(f"; {t.name} on {', '.join(t.eval_splits)}" for t in downstream)
    evaluated = (*(t.name for t in capfilt_tasks), *(t.name for t in downstream))
    for model in ("baseline", *(L.variant(k) for k in range(1, rounds + 1))):
        models = [L.model(model, t.name) for t in capfilt_tasks + downstream_ft]
        pre = L.model(model, "pretrain")  # probed: does its image tower know colours and shapes?
        result = L.evaluation(model)
        captions, grid = result.replace(".json", "_captions.json"), result.replace(".json", "_grid.png")
        out.append(Stage(name=f"evaluate_{model}", fn=fns.stage_evaluate,
                         kwargs={"model_dirs": models, "data_dirs": tests, "params": params, "probe_model": pre,
                                 "probe_fit_dir": human, "out_file": result,
                         "grid_file": grid}, deps=(*models, pre, human, *tests),
                         outs=(captions,), params=("evaluate",), metrics=(result,), plots=(grid,), gpu=True,
                         evaluates=evaluated,
                         artifacts=((result, "evaluation.json"), (captions, "captions.json"),
                                    (grid, "caption_grid.png")),
                         comment=f"the {model} models on test and novel: retrieval, captions (COCO metrics, "
                                 "grounding by attribute), probes of the pre-trained image tower" + extra))  # fmt: skip
    report = L.report
    base_eval, boot_eval = L.evaluation("baseline"), L.evaluation("bootstrapped")
    caps = tuple(e.replace(".json", "_captions.json") for e in (base_eval, boot_eval))
    captioned = [L.split("test"), L.split("novel")]
    out.append(Stage(name="report", fn=fns.stage_report, kwargs={"baseline": base_eval, "bootstrapped": boot_eval,
                     "out_dir": report, "quality": L.quality(), "captions": list(caps), "split_dirs": captioned},
                     deps=(base_eval, boot_eval, L.quality(), *caps, *captioned),
                     outs=(f"{report}/comparison.csv", f"{report}/comparison.md"),
                     metrics=(f"{report}/comparison.json", f"{report}/long"), plots=(f"{report}/comparison.png",),
                     comment="baseline vs bootstrapped: verdict, table, 95% intervals over images, chart"))  # fmt: skip
    return out


def by_name(name: str, *, params: str = "params.yaml", root: str = "data") -> Stage:
    found = {s.name: s for s in stages(params, root)}
    if name not in found:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(found)}")
    return found[name]


# ------------------------------------------------------------------------------------------------
# dvc.yaml

DVC_HEADER = """\
# GENERATED from flows/dag.py (the one description of the pipeline) by `blip dag --dvc > dvc.yaml`;
# edit flows/dag.py, not this file (tests/integration/test_dag.py fails when they differ).
# Every command is `blip stage NAME`: the stage function the Prefect flow runs, with the same kwargs.
#   dvc repro                                   # everything; a second run does nothing
#   dvc exp run -S capfilt.threshold=0.7        # re-selects from stored scores, re-trains downstream
#   dvc metrics diff / dvc metrics show         # baseline vs bootstrapped: data/metrics/report/
#   dvc plots show                              # CapFilt score histograms, PR curve, comparison chart
"""


def dvc_stage(s: Stage) -> dict[str, Any]:
    d: dict[str, Any] = {"cmd": f"blip stage {s.name}"}
    if s.comment:
        d["desc"] = s.comment
    d["deps"] = [*s.code_deps, *s.deps]
    if s.params:
        d["params"] = list(s.params)
    if s.outs or s.reports:
        d["outs"] = [{o: {"persist": True}} if s.persist else o for o in s.outs]
        d["outs"] += [{f: {"cache": False}} for f in s.reports]
    if s.metrics:
        d["metrics"] = [{f: {"cache": False}} for f in s.metrics]
    if s.plots:
        d["plots"] = [{f: {"cache": False}} for f in s.plots]
    d |= s.extra_dvc
    return d


def dvc_yaml(params: str = "params.yaml", root: str = "data") -> str:
    doc = {"stages": {s.name: dvc_stage(s) for s in stages(params, root)}}
    return DVC_HEADER + yaml.safe_dump(doc, sort_keys=False, width=120)
