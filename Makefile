# meli-sweep: run `make help` for the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

# virtual environment used by every target
VENV ?= .venv
# interpreter that creates the venv
PYTHON ?= python3
# torch installed before the package (CPU build here; GPU images bring their own)
TORCH_SPEC ?= torch==2.13.0
# local output prefix of demo and results
RUNS ?= runs
# config specs of the sweep (see README: Named configs)
CONFIGS ?= hidden50,hidden100
# synthetic rows in the demo dataset
DEMO_ROWS ?= 60000
# extra pytest arguments, e.g. -k tokenizer
PYTEST_ARGS ?=

VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q "$(TORCH_SPEC)"
	$(VPY) -m pip install -q -e '.[test]'
	touch $@

.PHONY: venv
venv: $(STAMP) ## create the venv and install the package with its test tools

.PHONY: demo
demo: $(STAMP) ## run a whole sweep locally on synthetic data (CPU) and print where the report is
	@mkdir -p $(RUNS)
	$(VPY) -m job synth --rows $(DEMO_ROWS) --out $(RUNS)/data/synthetic.csv.gz
	$(VPY) -m job sweep --configs $(CONFIGS) --data $(RUNS)/data/synthetic.csv.gz --embeddings none --out $(RUNS) --sweep demo

.PHONY: test
test: $(STAMP) ## run every test (starts its own S3, Prometheus and Pushgateway on loopback)
	$(VPY) -m pytest $(PYTEST_ARGS)

.PHONY: bench
bench: $(STAMP) ## seed-style training loop vs ours, side by side (DEVICE=cpu|cuda)
	$(VPY) -m job bench --device $(or $(DEVICE),auto)

.PHONY: clean
clean: ## remove local runs and caches (keeps the venv)
	rm -rf $(RUNS) .pytest_cache
