# The commands people use. Each one installs what it needs first.
#   make train [CONFIG=configs/...yaml] [ARGS="train.epochs=2 ..."] [NPROC=n]
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
CONFIG  ?= configs/demo/sskt.yaml
ARGS    ?=
NPROC   ?= 1
SEEDS   ?= 0 1
RUN     ?=
IMAGES  ?=
# One process; or NPROC processes: accelerate launch on GPUs (every launch option given, so it prints no
# default-value warnings; the config's train.precision still decides the precision), torchrun on a CPU
# (accelerate launch --cpu starts one process only).
GPU     := $(shell nvidia-smi -L 2>/dev/null | head -1)
ACCELERATE = $(VENV)/bin/accelerate launch --multi_gpu --num_processes $(NPROC) --num_machines 1 \
             --mixed_precision no --dynamo_backend no -m
LAUNCH   = $(if $(filter 1,$(NPROC)),$(PY) -m,$(if $(GPU),$(ACCELERATE),$(VENV)/bin/torchrun --standalone --nproc_per_node $(NPROC) -m))

.PHONY: help setup test train demo demo-sources cache bench evaluate predict clean-runs

help: ## this list
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: CONFIG=configs/...yaml ARGS=\"key=value ...\" NPROC=n SEEDS=\"0 1\" RUN=runs/<name>/seed<k> IMAGES=\"a.png b.jpg\""

setup: $(VENV)/.installed ## create .venv and install requirements.txt

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

test: setup ## run the test suite (CPU, no network)
	$(PY) -m pytest -q tests

# The embedded demo needs its two stand-in sources, pretrained once and reused.
train: setup $(if $(findstring configs/demo/,$(CONFIG)),demo-sources) ## train CONFIG (default: the demo) with ARGS, on NPROC processes
	$(LAUNCH) engine.train --config $(CONFIG) $(ARGS)

demo-sources: setup ## pretrain the demo's two stand-in sources (once)
	$(PY) -m tools.demo_sources

# Scratch vs SSKT with each source set, SEEDS seeds each, as a mean +- std table.
demo: demo-sources ## scratch vs SSKT on the demo data, SEEDS seeds, mean +- std table
	$(PY) -m tools.demo --seeds $(SEEDS)

# Build the frozen-source output caches of CONFIG ahead of training (train builds them too).
cache: setup $(if $(findstring configs/demo/,$(CONFIG)),demo-sources) ## build CONFIG's source-output caches ahead of training
	$(LAUNCH) tools.cache_sources --config $(CONFIG) $(ARGS)

# Throughput figures and ratios, measured in one run: bench/results.json.
bench: setup ## throughput figures: bench/results.json
	$(PY) -m tools.bench

# Score a run's checkpoint on the test split with its metrics (ARGS="--which best" for best.pt).
evaluate: setup ## score RUN=runs/<name>/seed<k> (final.pt) on its test split
	$(PY) -m engine.evaluate --run $(RUN) $(ARGS)

predict: setup ## top classes of IMAGES by RUN's final.pt
	$(PY) -m engine.predict --checkpoint $(RUN)/checkpoints/final.pt $(IMAGES) $(ARGS)

clean-runs: ## delete runs/
	rm -rf runs
