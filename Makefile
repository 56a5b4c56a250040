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

tools: ## install external tools (MinIO server, helm 3 and 4, kind and Kubernetes, ...) into $(DOCPROC_TOOLS_DIR)
	@for s in scripts/tools/*.sh; do bash "$$s" >/dev/null || exit 1; done

run: env ## process samples/ into out/ on the embedded default (no server, local Dask)
	$(VENV)/bin/docproc run samples --out out

lint: env ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check src flows tests benchmarks
	$(VENV)/bin/ruff format --check src flows tests benchmarks
	$(VENV)/bin/mypy

# The docproc image (mostly downloads) is built while the tools compile (mostly CPU): on 2 cores that
# overlap saves most of the image's cold time. Then the suite, then the kind end-to-end run.
test: env ## install everything the tests need, run the whole suite, then the kind end-to-end run
	bash scripts/tools/kind.sh debs >/dev/null
	$(MAKE) --no-print-directory -j2 --output-sync=target tools image
	$(MAKE) --no-print-directory lint
	$(VENV)/bin/pytest
	$(MAKE) --no-print-directory kind-test

bench: env ## benchmark: the OCR engines side by side, docproc run (1 and 2 workers) vs the raw engine
	$(PY) -m benchmarks.run

-include mk/*.mk

bench-scale: env ## orchestration cost at 10,000 and 100,000 small documents (BENCH_SIZES=1000,10000 to choose)
	nice -n 10 $(PY) -m benchmarks.scale
