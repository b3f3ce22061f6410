# Self-documenting: `make help` lists the targets with their ## comments.
.DEFAULT_GOAL := help
PYTHON ?= python
PIP ?= $(PYTHON) -m pip
STAMP := .install.stamp

.PHONY: help install run test test-all lint format bench clean

help:  ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PIP) install -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)  ## install the project and dev tools (pip install -e .[dev]); re-runs when pyproject.toml changes

run: $(STAMP)  ## the main job, end to end on the embedded world (dvc repro of the whole DAG)
	dvc repro
	@echo
	@echo "World: data/world/<split>/ (webdataset shards + manifests)   tokenizer: data/tokenizer/"
	@echo "Read report (DVC metrics):"
	@dvc metrics show

test: $(STAMP)  ## fast test suite (no slow or GPU tests)
	$(PYTHON) -m pytest -m "not slow and not gpu" -q

test-all: $(STAMP)  ## every test, slow ones included (GPU tests skip without CUDA)
	$(PYTHON) -m pytest -q

lint: $(STAMP)  ## ruff lint + format check
	ruff check blip_core flows tests benchmarks
	ruff format --check blip_core flows tests benchmarks

format: $(STAMP)  ## apply ruff fixes and formatting
	ruff check --fix blip_core flows tests benchmarks
	ruff format blip_core flows tests benchmarks

bench: $(STAMP)  ## data benchmarks: world generation and shard read throughput
	$(PYTHON) benchmarks/bench_data.py

clean:  ## remove generated data and caches (not the DVC cache)
	rm -rf data/world data/tokenizer data/metrics .pytest_cache .ruff_cache
