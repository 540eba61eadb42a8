# The commands people use. Each one installs what it needs first.
#   make train [CONFIG=configs/...yaml] [ARGS="train.epochs=2 ..."] [NPROC=n]
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
CONFIG  ?= configs/demo/sskt.yaml
ARGS    ?=
NPROC   ?= 1
SEEDS   ?= 0 1 2
# One process, or the same module under accelerate launch on NPROC GPUs.
LAUNCH   = $(if $(filter 1,$(NPROC)),$(PY) -m,$(VENV)/bin/accelerate launch --multi_gpu --num_processes $(NPROC) -m)

.PHONY: setup test train demo demo-sources demo-sources-check cache bench clean-runs

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

test: setup
	$(PY) -m pytest -q tests

# The embedded demo's two stand-in sources are committed (configs/demo/sources/); check they are current.
train: setup $(if $(findstring configs/demo/,$(CONFIG)),demo-sources-check)
	$(LAUNCH) engine.train --config $(CONFIG) $(ARGS)

demo-sources-check: setup
	$(PY) -m tools.demo_sources --check

# Retrain both demo sources from their configs and verify the committed exports (or export new ones).
demo-sources: setup
	$(PY) -m tools.demo_sources

# The demo table (configs/demo/table.yaml), SEEDS seeds per row, mean +- std; ARGS go to every run.
demo: demo-sources-check
	$(PY) -m tools.demo --seeds $(SEEDS) $(ARGS)

# Build the frozen-source output caches of CONFIG ahead of training (train builds them too).
cache: setup $(if $(findstring configs/demo/,$(CONFIG)),demo-sources-check)
	$(LAUNCH) tools.cache_sources --config $(CONFIG) $(ARGS)

# Throughput figures and ratios, measured in one run: bench/results.json.
bench: setup
	$(PY) -m tools.bench

clean-runs:
	rm -rf runs
