"""Data-quality gates: the Great Expectations suites and the leakage check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from blip_core.fileio import write_json
from flows.stages.params import section


def stage_validate(
    kind: str, path: str | Path, *, params=None, out_file: str | Path | None = None, gx_root=None
) -> dict[str, Any]:
    """Run the Great Expectations suites on raw web shards (`raw`) or a CapFilt work folder (`capfilt`).

    Raises flows.validation.DataQualityError (a readable report) when an expectation fails.
    """
    from blip_core.config.data import ReaderConfig
    from blip_core.config.pipeline import CapFiltConfig, ValidateConfig
    from flows import validation as v

    cfg: ValidateConfig = section(params, "validate", ValidateConfig)
    if not Path(path).is_dir():
        raise FileNotFoundError(f"folder to validate not found: {path}")
    if kind == "raw":
        from blip_core.data.caption_tables import raw_caption_table

        df = raw_caption_table(path, reader_cfg=section(params, "reader", ReaderConfig))
        reports = [v.run_suite("raw_web", v.raw_web_suite(cfg), df, data_asset=path, root=gx_root)]
    elif kind == "capfilt":
        out, sel, meta = v.capfilt_tables(path)
        capfilt_cfg: CapFiltConfig = section(params, "capfilt", CapFiltConfig)
        capfilt_cfg.threshold = meta.get("threshold", capfilt_cfg.threshold)  # the one selection used
        reports = [
            v.run_suite("capfilt_output", v.capfilt_output_suite(cfg, capfilt_cfg), out, data_asset=path, root=gx_root),
            v.run_suite(
                "capfilt_selection",
                v.capfilt_selection_suite(cfg, v.raw_web_noise(sel), int(sel["kept_noisy"].notna().sum())),
                sel,
                data_asset=path,
                root=gx_root,
            ),
        ]
    else:
        raise ValueError(f"validate kind must be raw or capfilt, got {kind!r}")
    return v.gate(reports, out_file)


def stage_leakage(
    eval_dirs: list[str | Path], pool_dirs: list[str | Path], *, params=None, out_file: str | Path | None = None
) -> dict[str, Any]:
    """Evaluation images found in the pre-training pool (by content hash); fails above the configured count."""
    from blip_core.config.pipeline import ValidateConfig
    from blip_core.eval.leakage import leakage_report

    cfg: ValidateConfig = section(params, "validate", ValidateConfig)
    report = leakage_report(eval_dirs, pool_dirs)
    report["max_leaked_images"] = cfg.max_leaked_images
    report["success"] = report["leaked_total"] <= cfg.max_leaked_images
    if out_file is not None:
        Path(out_file).parent.mkdir(parents=True, exist_ok=True)
        write_json(out_file, report)
    if not report["success"]:
        from flows.validation import DataQualityError

        per_split = {k: v["leaked"] for k, v in report["splits"].items()}
        raise DataQualityError(
            f"{report['leaked_total']} evaluation images are in the pre-training pool "
            f"(validate.max_leaked_images={cfg.max_leaked_images}): {per_split}"
        )
    return report
