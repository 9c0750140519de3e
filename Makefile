# tickcast — see README.md. `make help` lists the targets.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test lint typecheck bench clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP) ## create .venv with everything `make test` needs

run: $(STAMP) ## start the whole system locally (ARGS="--source sim" for offline)
	$(BIN)/tickcast up $(ARGS)

test: $(STAMP) ## run the full test suite (starts the servers it needs)
	$(BIN)/pytest $(ARGS)

lint: $(STAMP) ## ruff + mypy
	$(BIN)/ruff check tickcast dataflows models api tests benchmarks
	$(BIN)/mypy tickcast api

bench: $(STAMP) ## run the benchmarks (prints figures and ratios against same-run references)
	$(BIN)/python benchmarks/bench_pipeline.py
	$(BIN)/python benchmarks/bench_kafka.py --trades 1000000
	$(BIN)/python benchmarks/bench_latency.py
	$(BIN)/python benchmarks/bench_latency.py --via-kafka
	$(BIN)/python benchmarks/bench_online.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_api.py
	$(BIN)/python benchmarks/bench_registry.py

clean: ## remove .venv and local data
	rm -rf $(VENV) data .pytest_cache
