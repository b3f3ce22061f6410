"""What the Prefect run page shows of each stage: a log line with its figures, and an artifact whose key
sorts in DAG order and whose description says what it is."""

from __future__ import annotations

import subprocess
import sys

from flows import dag, prefect_tasks


def test_a_stage_summary_is_one_log_line_with_its_first_figures():
    summary = {"final": {"itc_loss": 1.23456, "lm_loss": 2.5}, "images_per_s": 300, "examples": [1, 2], "note": "x"}
    assert prefect_tasks.summary_line("pretrain_baseline", summary) == (
        "pretrain_baseline: final/itc_loss=1.235, final/lm_loss=2.5, images_per_s=300"
    )
    many = {f"k{i}": float(i) for i in range(prefect_tasks.SUMMARY_KEYS + 3)}
    assert prefect_tasks.summary_line("s", many).endswith("(+3 more in the artifact)")
    assert prefect_tasks.summary_line("s", None) == "s: done"


def test_stage_artifacts_sort_in_dag_order_with_descriptions(monkeypatch):
    made = []
    monkeypatch.setattr(prefect_tasks, "create_markdown_artifact", lambda **kw: made.append(kw))
    names = [s.name for s in dag.stages()]
    for name in reversed(names):  # whatever order they finish in
        prefect_tasks.stage_artifact(name, {"x": 1.0})
    keys = [a["key"] for a in made]
    assert sorted(keys) == [f"{i:02d}-{n.replace('_', '-')}" for i, n in enumerate(names, start=1)]
    for a, name in zip(made, reversed(names), strict=True):
        assert a["description"].startswith(f"Stage {names.index(name) + 1} of {len(names)}, {name}: ")
        assert len(a["description"]) > len(name) + 20


def test_the_flow_parameters_raise_no_pydantic_warning():
    """`make serve` printed pydantic's "Field name ... shadows an attribute" twice: a flow parameter
    named like a BaseModel attribute (it was `register`)."""
    code = "import flows.bootstrap as b; b.bootstrap.validate_parameters({'params': 'params.yaml'})"
    done = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "shadows an attribute" not in done.stderr
