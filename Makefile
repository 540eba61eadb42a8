# The commands people use. Each one installs what it needs first.
#   make train [CONFIG=configs/...yaml] [ARGS="train.epochs=2 ..."] [NPROC=n]
#   make reproduce TABLE=comparison|maxl|demo SEEDS=3 [CELLS=...] [NPROC=n | JOBS=n] [PRINT=1] [SLURM=1 NODES=2 GPUS=4]
#   make results [TABLE=...] [README=1]      make demo [SEEDS=...] [CELLS=...] [JOBS=n] [ARGS=...]      make gpu-check      make gpu-bench
#   make demo-video [SEEDS=...] [CELLS=...] [JOBS=n] [ARGS=...] [README=1]
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
CONFIG  ?= configs/demo/sskt.yaml
ARGS    ?=
NPROC   ?= 1
JOBS    ?= 1
SEEDS   ?= 0 1 2
TABLE   ?=
CELLS   ?=
README  ?=
NODES   ?= 1
GPUS    ?= 1
RUN     ?=
IMAGES  ?=
# One process; or NPROC processes: accelerate launch on GPUs (every launch option given, so it prints no
# default-value warnings; the config's train.precision still decides the precision), torchrun on a CPU
# (accelerate launch --cpu starts one process only).
GPU     := $(shell nvidia-smi -L 2>/dev/null | head -1)
ACCELERATE = $(VENV)/bin/accelerate launch --multi_gpu --num_processes $(NPROC) --num_machines 1 \
             --mixed_precision no --dynamo_backend no -m
LAUNCH   = $(if $(filter 1,$(NPROC)),$(PY) -m,$(if $(GPU),$(ACCELERATE),$(VENV)/bin/torchrun --standalone --nproc_per_node $(NPROC) -m))

.PHONY: help setup test train demo demo-sources demo-sources-check demo-video demo-video-data cache bench source-fidelity preprocess-video reproduce results gpu-check gpu-bench \
        evaluate predict clean-runs

help: ## this list
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: CONFIG=configs/...yaml ARGS=\"key=value ...\" NPROC=n JOBS=n SEEDS=\"0 1\" TABLE=demo CELLS=\"KD 'row/column'\" README=1"
	@echo "             RUN=runs/<name>/seed<k> IMAGES=\"a.png photos/ 'shots/*.jpg'\""

setup: $(VENV)/.installed ## create .venv and install requirements.txt

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

test: setup ## run the test suite (CPU, no network)
	$(PY) -m pytest -q tests

# The embedded demo's two stand-in sources are committed (configs/demo/sources/): check they are current;
# the video demo (configs/demo/video_*.yaml) also needs its procedural videos' frame store, made once and reused.
DEMO_DEPS = $(if $(findstring configs/demo/,$(CONFIG)),demo-sources-check) $(if $(findstring configs/demo/video_,$(CONFIG)),demo-video-data)
# The video config whose frame store demo-video-data makes: CONFIG when it is one, else the video demo's.
VIDEO_CONFIG = $(if $(findstring configs/demo/video_,$(CONFIG)),$(CONFIG),configs/demo/video_sskt.yaml)

train: setup $(DEMO_DEPS) ## train CONFIG (default: the demo) with ARGS, on NPROC processes
	$(LAUNCH) engine.train --config $(CONFIG) $(ARGS)

demo-sources-check: setup ## check the committed demo sources are current (one line if not)
	$(PY) -m tools.demo_sources --check

# Retrain both demo sources from their configs and verify the committed exports (or export new ones).
demo-sources: setup ## retrain the demo's two stand-in sources and verify the committed exports
	$(PY) -m tools.demo_sources

# The demo table (tables/demo.yaml): make reproduce then make results of TABLE=demo, over SEEDS; ARGS go to
# every run (ones that change what runs compute make a trial in runs/trial-<hash>/); CELLS="KD 'linear heads/*'"
# picks cells. The table is printed even when a run failed (the exit status says so). Two one-thread runs at a
# time unless JOBS is given: how the README's table was made, and the faster way on 2 cores.
DEMO_JOBS = $(if $(filter command line environment,$(origin JOBS)),$(JOBS),2)
demo: demo-sources-check ## scratch, KD, DML vs SSKT on the demo data: SEEDS seeds, mean +- std, Δ vs scratch
	$(PY) -m tools.reproduce --table demo --seeds $(SEEDS) $(if $(CELLS),--cells $(CELLS)) --jobs $(DEMO_JOBS) -- $(ARGS); status=$$?; \
	$(PY) -m tools.results --table demo --seeds $(SEEDS) $(if $(README),--readme README.md) -- $(ARGS) && exit $$status

# The video demo table (tables/demo_video.yaml) on procedural motion videos: its frame store (made once), then
# make reproduce and make results of TABLE=demo_video, as `make demo` (ARGS go to every run and to the data:
# ARGS="data.procedural.seed=1 data.root=data/demo/video/seed1.h5" is another draw of the videos, in a trial).
demo-video: demo-sources-check demo-video-data ## scratch vs SSKT on procedural motion videos: SEEDS seeds, mean +- std, Δ vs scratch
	$(PY) -m tools.reproduce --table demo_video --seeds $(SEEDS) $(if $(CELLS),--cells $(CELLS)) --jobs $(DEMO_JOBS) -- $(ARGS); status=$$?; \
	$(PY) -m tools.results --table demo_video --seeds $(SEEDS) $(if $(README),--readme README.md) -- $(ARGS) && exit $$status

demo-video-data: setup ## write and preprocess the video demo's procedural videos (once per data seed)
	$(PY) -m tools.demo_video --prepare $(VIDEO_CONFIG) $(ARGS)

# Build the frozen-source output caches of CONFIG ahead of training (train builds them too).
cache: setup $(DEMO_DEPS) ## build CONFIG's source-output caches ahead of training
	$(LAUNCH) tools.cache_sources --config $(CONFIG) $(ARGS)

# Throughput figures and ratios, measured in one run: bench/results.json.
# Figures go to a new dated file; OUT=bench/results.json updates the tracked one.
bench: setup ## throughput figures: bench/results-<time>.json (OUT=bench/results.json: the tracked file and docs/benchmarks.md)
	$(PY) -m tools.bench $(if $(OUT),--out $(OUT)) $(if $(filter bench/results.json,$(OUT)),--docs docs/benchmarks.md)

# How closely the 3D configs' source input policies reproduce the SSKT reference's train-mode sources, on
# stand-in ResNet-50s (tools/source_fidelity.py): a table, and bench/source_fidelity.json.
source-fidelity: setup ## 3D sources: each input policy's targets vs the reference's (ARGS="--seeds 3")
	$(PY) -m tools.source_fidelity $(ARGS)

# Decode a video data set once into an HDF5 frame store (exit status 3: finished, some videos failed).
#   make preprocess-video DATASET=ucf101 ROOT=data/UCF-101 OUT=data/ucf101.h5 [ARGS="--workers 8"]
#   make preprocess-video DATASET=mydata ROOT=data/my_videos OUT=data/mydata.h5 ARGS="--layout folders"
preprocess-video: setup ## decode DATASET=ucf101|hmdb51|<yours> ROOT=<videos> into the frame store OUT=<file.h5>
	@test -n "$(DATASET)" -a -n "$(ROOT)" -a -n "$(OUT)" || { echo "usage: make preprocess-video DATASET=ucf101|hmdb51|<name> ROOT=<videos> OUT=<file.h5> [ARGS=\"--layout folders\"]"; exit 2; }
	$(PY) -m tools.preprocess_video --dataset $(DATASET) --root $(ROOT) --out $(OUT) $(ARGS)

# Every cell x seed of a named table (tables/TABLE.yaml) as its own run; finished ones are skipped.
# SEEDS=3 is seeds 0-2, SEEDS="3 7" those two; CELLS="KD 'row/column'" only those cells. A cell whose config reads
# another run's checkpoint (a KD teacher) runs after it. Every run's inputs (data, weight files) are checked first: a
# local run downloads what its configs fetch, then skips runs whose inputs are still missing. JOBS=n runs n at a time
# (each its share of the threads; with several GPUs, one GPU each in turn; output in each run folder's reproduce.log).
# PRINT=1 lists the missing inputs (where each comes from), the commands and the plan's GPU-hours from bench/*.json
# (FETCH=1: download first). SLURM=1 writes sbatch scripts (slurm/TABLE/: an array job per cell with the table's
# resources, NODES GPUS TIME MEM overriding them, ACCOUNT PARTITION, ENV_SETUP="a shell line"; a job per source cache;
# submit.sh submits them in dependency order).
reproduce: setup $(if $(filter demo demo_video,$(TABLE)),demo-sources-check) $(if $(filter demo_video,$(TABLE)),demo-video-data) ## every cell x seed of tables/TABLE.yaml (PRINT=1, SLURM=1)
	$(if $(TABLE),,$(error TABLE is required: $(basename $(notdir $(wildcard tables/*.yaml)))))
	$(PY) -m tools.reproduce --table $(TABLE) --seeds $(SEEDS) $(if $(CELLS),--cells $(CELLS)) --nproc $(NPROC) --jobs $(JOBS) \
		$(if $(PRINT),--dry-run) $(if $(FETCH),--fetch) $(if $(SLURM),--slurm \
		$(if $(filter command line environment,$(origin NODES)),--nodes $(NODES)) \
		$(if $(filter command line environment,$(origin GPUS)),--gpus-per-node $(GPUS)) \
		$(if $(TIME),--time $(TIME)) $(if $(MEM),--mem $(MEM)) $(if $(ACCOUNT),--account $(ACCOUNT)) \
		$(if $(PARTITION),--partition $(PARTITION)) $(if $(ENV_SETUP),--setup '$(ENV_SETUP)')) -- $(ARGS)

# The named tables from every summary.json under runs/: results/TABLE.md, .csv and results/TABLE/*.png;
# README=1 also rewrites each table's section of README.md (between <!-- results:TABLE --> markers). A table with no
# finished run, or fewer runs than its CSV was made from, is left as it is (REPLACE=1 writes the smaller one).
results: setup ## tables (Markdown, CSV) and plots from every runs/**/summary.json (README=1: into README.md)
	$(PY) -m tools.results $(if $(TABLE),--table $(TABLE)) $(if $(README),--readme README.md) $(if $(REPLACE),--replace)

# The GPU-only paths (DALI mixed, bf16/fp16, channels_last, GPU-held cache, NCCL, SyncBatchNorm) in one table.
gpu-check: setup ## exercise the GPU-only paths (exits 0 without a GPU)
	$(PY) -m tools.gpu_check

# The GPU speed rows (2D, 3D and video-demo training eager vs compiled, packed runs, loaders) in one table, on one
# H100: bench/gpu-<name>.json (NAME=h100; ARGS="--only 2d,video_demo" or "--smoke" for tiny sizes).
gpu-bench: setup ## GPU training, packed-runs and loader rows: bench/gpu-<gpu>.json
	$(PY) -m tools.gpu_bench $(if $(NAME),--name $(NAME)) $(ARGS)

# Score a run's checkpoint on the test split with its metrics (ARGS="--which best" for best.pt).
evaluate: setup ## score RUN=runs/<name>/seed<k> (final.pt) on its test split
	$(PY) -m engine.evaluate --run $(RUN) $(ARGS)

predict: setup ## top classes of IMAGES (files, folders, globs; videos too) by RUN's final.pt
	$(PY) -m engine.predict --checkpoint $(RUN)/checkpoints/final.pt $(IMAGES) $(ARGS)

clean-runs: ## delete runs/
	rm -rf runs
