# docproc: `make run` processes samples/ into out/; `make test` runs the whole suite.
SHELL := bash
.DEFAULT_GOAL := help
export DOCPROC_TOOLS_DIR ?= $(HOME)/.cache/docproc-tools
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: help env tools run test lint bench bench-scale
help: ## list targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

env: ## create/update .venv from uv.lock
	@scripts/bootstrap.sh

tools: ## install external tools (MinIO server, helm, ...) into $(DOCPROC_TOOLS_DIR)
	@for s in scripts/tools/*.sh; do bash "$$s" >/dev/null || exit 1; done

run: env ## process samples/ into out/ on the embedded default (no server, local Dask)
	$(VENV)/bin/docproc run samples --out out

lint: env ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check src flows tests benchmarks
	$(VENV)/bin/ruff format --check src flows tests benchmarks
	$(VENV)/bin/mypy

test: env tools lint ## install everything the tests need and run the whole suite
	$(VENV)/bin/pytest

bench: env ## benchmark: plain easyocr loop vs docproc run with 1 and 2 workers
	$(PY) -m benchmarks.run

-include mk/*.mk

bench-scale: env ## orchestration cost at 10,000 and 100,000 small documents (BENCH_SIZES=1000,10000 to choose)
	nice -n 10 $(PY) -m benchmarks.scale
