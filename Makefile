# Self-documenting: `make help` lists the targets with their ## comments.
.DEFAULT_GOAL := help
PYTHON ?= python
PIP ?= $(PYTHON) -m pip
STAMP := .install.stamp
MLFLOW_PORT ?= 5000
PREFECT_PORT ?= 4200

.PHONY: help install run effect effect-full repro serve mlflow-ui prefect-server test test-slow test-all lint format bench bench-gpu clean

help:  ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PIP) install -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)  ## install the project and dev tools (pip install -e .[dev]); re-runs when pyproject.toml changes

run: $(STAMP)  ## the main job end to end: local Prefect server + `prefect deployment run bootstrap/full`
	$(PYTHON) -m flows.local

effect: $(STAMP)  ## bootstrap effect: the whole flow for world seeds 1-3 -> reports/bootstrap_effect.{md,json} (~80 min)
	$(PYTHON) -m flows.effect --seeds 1 2 3

effect-full: $(STAMP)  ## the same on the full-size world (configs/default-world.yaml, seed 1; over an hour)
	$(PYTHON) -m flows.effect --seeds 1 --params configs/default-world.yaml --root data/effect-full \
		--out reports/bootstrap_effect_full_world

repro: $(STAMP)  ## the same DAG through DVC (dvc repro), then its metrics
	$(PYTHON) -m dvc repro
	$(PYTHON) -m dvc metrics show

prefect-server: $(STAMP)  ## start a local Prefect server (UI at http://127.0.0.1:$(PREFECT_PORT))
	PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_UI_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api \
		$(PYTHON) -m prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

serve: $(STAMP)  ## serve the bootstrap/full deployment (needs PREFECT_API_URL=http://127.0.0.1:4200/api)
	$(PYTHON) -m flows.bootstrap serve

mlflow-ui: $(STAMP)  ## MLflow UI on http://127.0.0.1:$(MLFLOW_PORT) (MLFLOW_PORT=5001 make mlflow-ui) over mlflow/mlflow.db
	$(PYTHON) -m mlflow server --host 127.0.0.1 --port $(MLFLOW_PORT) --backend-store-uri sqlite:///mlflow/mlflow.db \
		--default-artifact-root ./mlflow/artifacts

test: $(STAMP)  ## fast test suite (no slow or GPU tests)
	$(PYTHON) -m pytest -m "not slow and not gpu" -q

test-slow: $(STAMP)  ## only the slow tests: end-to-end flows, make run killed and resumed, CapFilt at 10x load (~20 min)
	$(PYTHON) -m pytest -m "slow and not gpu" -q

test-all: $(STAMP)  ## every test, slow ones included (GPU tests skip without CUDA)
	$(PYTHON) -m pytest -q

lint: $(STAMP)  ## ruff lint + format check
	ruff check blip_core flows tests benchmarks
	ruff format --check blip_core flows tests benchmarks

format: $(STAMP)  ## apply ruff fixes and formatting
	ruff check --fix blip_core flows tests benchmarks
	ruff format blip_core flows tests benchmarks

bench-gpu: $(STAMP)  ## the GPU figures on a CUDA machine -> reports/benchmarks_gpu.{md,json} (benchmarks/gpu/run.sh runs it with the gpu tests)
	$(PYTHON) benchmarks/bench_gpu.py --compile

bench: $(STAMP)  ## every benchmark (data, ours vs HF, CapFilt scaling, Dask, learning) -> reports/benchmarks.md (~15 min)
	$(PYTHON) benchmarks/report.py

clean:  ## remove generated data and caches (not the DVC cache)
	rm -rf data/world data/tokenizer data/metrics data/runs data/capfilt data/logs .pytest_cache .ruff_cache
