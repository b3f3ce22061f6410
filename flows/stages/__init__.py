"""Stage functions: one per pipeline step, one module per stage family.

`flows/dag.py` says with which arguments each pipeline step calls them (`blip stage NAME`, which
dvc.yaml runs, and the Prefect task of the step make that same call); the other `blip`
subcommands call them with paths of the user's choosing. Stage functions read their own
`params.yaml` section, take explicit input/output paths, import only `blip_core` (never Prefect)
and return a small JSON-able summary. A stage's code dependencies are its family's module and what
that module imports (flows.codedeps.code_of), so an edit to one family re-runs only its stages.
"""

from flows.stages.capfilt import (
    capfilt_config,
    stage_capfilt_audit,
    stage_capfilt_reshard,
    stage_capfilt_run,
    stage_capfilt_score,
    stage_capfilt_select,
)
from flows.stages.data import stage_convert, stage_inspect, stage_tokenizer, stage_world
from flows.stages.evaluate import stage_evaluate
from flows.stages.gates import stage_leakage, stage_validate
from flows.stages.report import REPORT_METRICS, format_comparison, report_metrics, stage_report
from flows.stages.train import stage_pretrain_vision, stage_train

__all__ = [
    "REPORT_METRICS",
    "capfilt_config",
    "format_comparison",
    "report_metrics",
    "stage_capfilt_audit",
    "stage_capfilt_reshard",
    "stage_capfilt_run",
    "stage_capfilt_score",
    "stage_capfilt_select",
    "stage_convert",
    "stage_evaluate",
    "stage_inspect",
    "stage_leakage",
    "stage_pretrain_vision",
    "stage_report",
    "stage_tokenizer",
    "stage_train",
    "stage_validate",
    "stage_world",
]
