# The commands people use. Each one installs what it needs first.
#   make train [CONFIG=configs/...yaml] [ARGS="train.epochs=2 ..."] [NPROC=n]
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
CONFIG  ?= configs/demo/sskt.yaml
ARGS    ?=
NPROC   ?= 1
SEEDS   ?= 0 1
# One process, or the same module under accelerate launch on NPROC GPUs.
LAUNCH   = $(if $(filter 1,$(NPROC)),$(PY) -m,$(VENV)/bin/accelerate launch --multi_gpu --num_processes $(NPROC) -m)

.PHONY: setup test train demo demo-sources demo-video demo-video-data cache bench preprocess-video clean-runs

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

test: setup
	$(PY) -m pytest -q tests

# The embedded demo needs its two stand-in sources, pretrained once and reused; the video demo
# (configs/demo/video_*.yaml) also its procedural videos' frame store, made once and reused.
DEMO_DEPS = $(if $(findstring configs/demo/,$(CONFIG)),demo-sources) $(if $(findstring configs/demo/video_,$(CONFIG)),demo-video-data)

train: setup $(DEMO_DEPS)
	$(LAUNCH) engine.train --config $(CONFIG) $(ARGS)

demo-sources: setup
	$(PY) -m tools.demo_sources

# Scratch vs SSKT with each source set, SEEDS seeds each, as a mean +- std table.
demo: demo-sources
	$(PY) -m tools.demo --seeds $(SEEDS)

# The offline video demo: scratch vs SSKT on procedural motion videos, SEEDS seeds each (mean +- std table);
# ARGS (e.g. "train.epochs=4") apply to every run.
demo-video: demo-sources
	$(PY) -m tools.demo_video $(ARGS) --seeds $(SEEDS)

demo-video-data: setup
	$(PY) -m tools.demo_video --prepare $(CONFIG) $(ARGS)

# Build the frozen-source output caches of CONFIG ahead of training (train builds them too).
cache: setup $(DEMO_DEPS)
	$(LAUNCH) tools.cache_sources --config $(CONFIG) $(ARGS)

# Throughput figures and ratios, measured in one run: bench/results.json.
bench: setup
	$(PY) -m tools.bench

# Decode a video data set once into an HDF5 frame store (exit status 3: finished, some videos failed).
#   make preprocess-video DATASET=ucf101 ROOT=data/UCF-101 OUT=data/ucf101.h5 [ARGS="--workers 8"]
preprocess-video: setup
	@test -n "$(DATASET)" -a -n "$(ROOT)" -a -n "$(OUT)" || { echo "usage: make preprocess-video DATASET=ucf101|hmdb51 ROOT=<videos> OUT=<file.h5>"; exit 2; }
	$(PY) -m tools.preprocess_video --dataset $(DATASET) --root $(ROOT) --out $(OUT) $(ARGS)

clean-runs:
	rm -rf runs
