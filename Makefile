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

# Creating .venv needs Python 3.11+ with a working `venv` (Debian/Ubuntu ship ensurepip
# separately, in python3-venv): checked before anything runs, so a missing piece is one line.
ifneq ($(filter install run test lint bench,$(or $(MAKECMDGOALS),$(.DEFAULT_GOAL))),)
ifeq ($(wildcard $(STAMP)),)
ifneq ($(shell $(PY) -c 'import sys; print(sys.version_info >= (3, 11))' 2>/dev/null),True)
$(error '$(PY)' is not Python 3.11 or newer: install one, or run make PY=/path/to/python3.11)
endif
ifneq ($(shell $(PY) -c 'import ensurepip, venv; print("ok")' 2>/dev/null),ok)
$(error '$(PY) -m venv' does not work here (no ensurepip): on Debian/Ubuntu, sudo apt-get install python3-venv, then make again)
endif
endif
endif

$(STAMP): pyproject.toml
	@$(PY) -m venv $(VENV) >/dev/null 2>&1 || { rm -rf $(VENV); \
	  echo "make: '$(PY) -m venv $(VENV)' failed: run it by hand to see why" >&2; exit 1; }
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
	$(BIN)/python benchmarks/bench_latency.py --via-kafka --broker s3
	$(BIN)/python benchmarks/bench_kafka_lag.py --duration 600
	$(BIN)/python benchmarks/bench_history.py
	$(BIN)/python benchmarks/bench_online.py
	$(BIN)/python benchmarks/bench_board.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_gate.py
	$(BIN)/python benchmarks/bench_selection.py
	$(BIN)/python benchmarks/bench_api.py
	$(BIN)/python benchmarks/bench_registry.py
	$(BIN)/python benchmarks/bench_news.py

clean: ## remove .venv and local data
	rm -rf $(VENV) data .pytest_cache
