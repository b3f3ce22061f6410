"""Great Expectations gates: caption-quality suites built in code, run through a file-backed context.

The context lives in the project the user runs from (`gx/great_expectations.yml` under the current
folder: the repo for `make run` and `dvc repro`), never in the install location; suites, validation
definitions and checkpoints are (re)written from code on every run, so thresholds come only from
params.yaml's `validate` section. Data Docs HTML lands in `gx/uncommitted/data_docs/local_site/index.html`.

A failed expectation raises `DataQualityError` whose message lists every failing expectation with
its column, observed value and bounds: the pipeline stops there with a readable report.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from blip_core.config.pipeline import CapFiltConfig, ValidateConfig
from blip_core.fileio import write_json

logger = logging.getLogger(__name__)


def gx_root() -> Path:
    """The GX project root: BLIP_GX_ROOT, else the current folder (the user's project; the pipeline
    runs from the repo, where gx/ sits beside flows/)."""
    return Path(os.environ.get("BLIP_GX_ROOT") or Path.cwd())


class DataQualityError(RuntimeError):
    """A data-quality gate failed; the message is the readable report."""


def raw_web_suite(cfg: ValidateConfig):
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToNotBeNull(column="caption", mostly=cfg.min_decoded_rate),
        gxe.ExpectColumnValuesToBeBetween(
            column="caption_chars", min_value=cfg.min_caption_chars, max_value=cfg.max_caption_chars
        ),
        gxe.ExpectColumnMeanToBeBetween(column="has_url", max_value=cfg.max_url_rate),
        gxe.ExpectColumnMeanToBeBetween(column="has_html", max_value=cfg.max_html_rate),
        gxe.ExpectColumnMeanToBeBetween(column="has_filename", max_value=cfg.max_filename_rate),
        gxe.ExpectColumnMeanToBeBetween(column="is_boilerplate", max_value=cfg.max_boilerplate_rate),
        gxe.ExpectColumnMeanToBeBetween(column="alpha_ratio", min_value=cfg.min_alpha_ratio),
        gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(column="caption", min_value=cfg.min_unique_caption_rate),
        gxe.ExpectColumnMeanToBeBetween(column="decoded", min_value=cfg.min_decoded_rate),
        gxe.ExpectColumnValuesToBeBetween(column="min_side", min_value=cfg.min_image_side),
    ]


def capfilt_output_suite(cfg: ValidateConfig, capfilt: CapFiltConfig):
    import great_expectations.expectations as gxe

    filtered = capfilt.policy in ("filter", "both")
    return [
        gxe.ExpectColumnValuesToBeBetween(
            column="itm_prob", min_value=capfilt.threshold if filtered else 0.0, max_value=1.0
        ),
        gxe.ExpectColumnValuesToBeBetween(column="itc_cosine", min_value=-1.0, max_value=1.0),
        gxe.ExpectColumnMinToBeBetween(column="num_captions", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="synthetic_words", min_value=1, max_value=capfilt.max_length),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["key", "caption"]),
        gxe.ExpectColumnValuesToBeInSet(column="source", value_set=["human", "web", "synthetic"]),
    ]


def capfilt_selection_suite(cfg: ValidateConfig, raw_noise: float | None = None, kept_labelled: int = 0):
    """`raw_noise`: the raw web pool's ground-truth noise rate (`raw_web_noise`); the kept set's bound
    is relative to it. None (no labels, as in real data): no noise expectation. `kept_labelled`: the
    kept captions with a label, whose rate's standard error widens the bound by
    `validate.kept_noise_margin_z` of them (0: no margin)."""
    import great_expectations.expectations as gxe

    suite = [
        gxe.ExpectColumnValuesToBeBetween(column="itm_prob", min_value=0.0, max_value=1.0),
        gxe.ExpectColumnValuesToBeBetween(column="itc_cosine", min_value=-1.0, max_value=1.0),
        gxe.ExpectColumnMeanToBeBetween(column="keep", min_value=cfg.keep_rate_min, max_value=cfg.keep_rate_max),
    ]
    if raw_noise is not None:
        base = min(1.0, raw_noise * cfg.max_kept_over_raw)
        margin = cfg.kept_noise_margin_z * math.sqrt(base * (1 - base) / kept_labelled) if kept_labelled else 0.0
        bound = round(min(1.0, base + margin), 6)
        note = (f"kept-set noise must be at most {cfg.max_kept_over_raw:g} x the raw web pool's noise "
                f"{raw_noise:.3f} = {base:.3f} (validate.max_kept_over_raw)")  # fmt: skip
        if margin:
            note += (f", + {cfg.kept_noise_margin_z:g} standard errors of a rate over {kept_labelled} kept captions "
                     f"({margin:.3f}; validate.kept_noise_margin_z) = {bound:.3f}")  # fmt: skip
        suite.append(gxe.ExpectColumnMeanToBeBetween(
            column="kept_noisy", max_value=bound, notes=note,
            meta={"raw_web_noise": raw_noise, "max_kept_over_raw": cfg.max_kept_over_raw, "margin": round(margin, 6)},
        ))  # fmt: skip
        # the raw pool's rate beside it on the validation page (its observed value is the bound's base)
        raw_note = "the raw web pool's noise rate: the base of the kept set's bound"
        suite.append(gxe.ExpectColumnMeanToBeBetween(column="raw_web_noisy", min_value=0.0, max_value=1.0,
                                                     notes=raw_note))  # fmt: skip
    return suite


def raw_web_noise(selection: pd.DataFrame) -> float | None:
    """Ground-truth noise rate of the web alt-texts CapFilt was given (kept or not; the columns
    `capfilt_tables` derives); None without labels, or when no labelled caption was kept (no noise to
    bound: the keep-rate band speaks for an empty set)."""
    raw = selection["raw_web_noisy"]
    return float(raw.mean()) if raw.notna().any() and selection["kept_noisy"].notna().any() else None


def capfilt_tables(work_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(output table of the resharded kept captions, selection table of every scored candidate,
    selection metadata: policy and the threshold in use)."""
    from blip_core.capfilt import SELECTION, SELECTION_META, SHARDS
    from blip_core.data.caption_tables import capfilt_output_table

    work_dir = Path(work_dir)
    out = capfilt_output_table(work_dir / SHARDS)
    out["synthetic_words"] = out["caption_words"].where(out["source"].eq("synthetic")).astype(float)
    sel = pd.read_parquet(work_dir / SELECTION)
    sel["keep"] = sel["keep"].astype(float)
    # ground-truth noise of the kept captions; NaN where a caption was dropped or has no label
    noisy = sel["gt_noisy"].astype(float)
    sel["kept_noisy"] = noisy.where(sel["keep"].astype(bool) & sel["gt_noisy"].notna())
    sel["raw_web_noisy"] = noisy.where(sel["source"].eq("web"))  # every web alt-text, kept or not
    meta_file = work_dir / SELECTION_META
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    return out, sel, meta


def run_suite(
    name: str,
    expectations: list,
    df: pd.DataFrame,
    *,
    data_asset: str | Path | None = None,
    root: str | Path | None = None,
) -> dict[str, Any]:
    """Validate `df` against `expectations` as suite `name`; build Data Docs; return a JSON-able report.

    `data_asset` names what was validated (the folder the table was read from) on the Data Docs
    page; the run is named after the pipeline run (`pipeline_run_name`).
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

    from flows.datadocs import localize_data_docs

    ctx = gx.get_context(mode="file", project_root_dir=str(root or gx_root()))
    # get before add: re-adding rewrites gx/great_expectations.yml (new ids) on every run
    ds = _get_or_add(lambda: ctx.data_sources.get("blip"), lambda: ctx.data_sources.add_pandas(name="blip"))
    asset = _get_or_add(lambda: ds.get_asset(name), lambda: ds.add_dataframe_asset(name=name))
    batch = _get_or_add(
        lambda: asset.get_batch_definition("whole"), lambda: asset.add_batch_definition_whole_dataframe("whole")
    )
    suite = ctx.suites.add_or_update(gx.ExpectationSuite(name=name, expectations=expectations))
    vd = ctx.validation_definitions.add_or_update(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    checkpoint = ctx.checkpoints.add_or_update(
        gx.Checkpoint(
            name=name,
            validation_definitions=[vd],
            actions=[],  # Data Docs are built below, after the asset is named
            result_format={"result_format": "SUMMARY"},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": df}, run_id=RunIdentifier(run_name=pipeline_run_name()))
    # GX's dataframe assets leave the batch spec's data_asset_name empty ("Data asset: None" on the
    # page): record the validated folder in the stored result before rendering it
    asset_label = _asset_label(data_asset) if data_asset is not None else name
    for key, vr in result.run_results.items():
        vr.meta.setdefault("batch_spec", {})["data_asset_name"] = asset_label
        ctx.validation_results_store.set(key, vr)
    ctx.build_data_docs(resource_identifiers=[*result.run_results, ExpectationSuiteIdentifier(name=name)])
    for site in ctx.get_docs_sites_urls():
        url = site.get("site_url") or ""
        if url.startswith("file://"):  # a local site (percent-encoded path)
            localize_data_docs(Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).parent)
    rows = []
    for vr in result.run_results.values():
        for r in vr.results:
            kwargs = {k: v for k, v in r.expectation_config.kwargs.items() if k != "batch_id"}
            rows.append(
                {
                    "expectation": r.expectation_config.type,
                    "kwargs": kwargs,
                    "success": bool(r.success),
                    "observed": _jsonable(r.result.get("observed_value", r.result.get("unexpected_count"))),
                    "unexpected_examples": _jsonable(r.result.get("partial_unexpected_list", [])[:5]),
                    "notes": r.expectation_config.notes,
                }
            )
    docs = [s["site_url"] for s in ctx.get_docs_sites_urls()]
    return {"suite": name, "success": bool(result.success), "rows": len(df), "results": rows, "data_docs": docs}


def pipeline_run_name() -> str:
    """The run a validation belongs to (GX's run name, a folder name in Data Docs): the Prefect flow
    run, `dvc repro`'s stage, or the CLI."""
    name = "blip-validate"
    if "prefect" in sys.modules:  # imported only inside a Prefect run of the pipeline
        from prefect.runtime import flow_run

        if flow_run.name:
            name = f"prefect-{flow_run.flow_name}-{flow_run.name}"
    elif os.environ.get("DVC_STAGE"):
        name = f"dvc-repro-{os.environ['DVC_STAGE']}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def _asset_label(path: str | Path) -> str:
    """A folder as the user knows it: relative to the working directory when inside it."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def _get_or_add(get, add):
    """GX raises LookupError (or its KeyError) for a datasource, asset or batch definition it lacks."""
    try:
        return get()
    except LookupError:
        return add()


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and np.isnan(v):
        return None
    return v


def format_report(report: dict[str, Any]) -> str:
    failed = [r for r in report["results"] if not r["success"]]
    lines = [
        f"data-quality suite '{report['suite']}' on {report['rows']} rows: {len(failed)} of "
        f"{len(report['results'])} expectations failed"
    ]
    for r in failed:
        args = ", ".join(f"{k}={v}" for k, v in r["kwargs"].items())
        lines.append(f"  FAILED {r['expectation']}({args}): observed {r['observed']}")
        if r.get("notes"):
            lines.append(f"         {r['notes']}")
        if r["unexpected_examples"]:
            lines.append(f"         examples: {r['unexpected_examples']}")
    if report.get("data_docs"):
        lines.append(f"  Data Docs: {report['data_docs'][0]}")
    return "\n".join(lines)


def gate(reports: list[dict[str, Any]], out_file: str | Path | None) -> dict[str, Any]:
    """Write the reports; raise DataQualityError with a readable report if any suite failed."""
    summary = {"success": all(r["success"] for r in reports), "suites": reports}
    if out_file is not None:
        Path(out_file).parent.mkdir(parents=True, exist_ok=True)
        write_json(out_file, summary, default=str)
    for r in reports:
        logger.info("%s", format_report(r))
    if not summary["success"]:
        raise DataQualityError("\n".join(format_report(r) for r in reports if not r["success"]))
    return summary
