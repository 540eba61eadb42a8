"""The 3D SSKT part of `make bench` (tools/bench.py --only video3d): training clips/s of shipped video
configs (the video demo's and the paper's UCF-101 3D ResNet-18), each built by the experiment builder
exactly as `make train` builds it (its target, heads, clip size, sources and their input resolution), with
only the videos, the missing weights, the batch and the caches' place replaced. Per workload, the sources'
outputs come
  - live: every source runs every step on each clip's middle frame (`cache: off`);
  - cached: from the per-frame HDF5 cache (engine.source_outputs.frame_cache), read through HDF5 (memory_gb 0);
  - in memory: from the same cache loaded whole onto the device (what `memory_gb` allows when it fits);
interleaved over several rounds (medians), and the per-frame cache's build time and size.
Weights a config does not ship are random (no download here): speed does not depend on their values.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torchvision.models import resnet50

from engine.config import load_config
from engine.experiment import Experiment
from tools import preprocess_video
from tools.bench_timing import time_training
from tools.synthetic_videos import write_ucf101



class Workload(NamedTuple):
    config: str  # the shipped config whose training is measured
    frames: int  # the synthetic videos' length and size (width, height), like the data the config trains on
    size: tuple[int, int]
    own_batch: bool  # keep the config's batch (a CPU-sized demo) rather than --clip-batch


WORKLOADS = {"demo": Workload("configs/demo/video_sskt.yaml", 16, (32, 32), own_batch=True),
             "resnet3d_18": Workload("configs/ucf101/resnet3d_18_scratch_sskt_PI.yaml", 48, (160, 120), own_batch=False)}
MODES = {"live": ("off", 0.0), "cached": ("auto", 0.0), "in_memory": ("auto", 8.0)}  # -> (cache, memory_gb)


def write_weights(cfg, folder: Path) -> list[str]:
    """Random weights for each source of `cfg` that has no weights file here (a download), in the file
    format its `format` reads; the overrides that point the config at them."""
    overrides = []
    for i, source in enumerate(cfg.sources):
        if source.weights and Path(source.weights).is_file():  # shipped with the config (the demo's)
            continue
        torch.manual_seed(i)
        state = resnet50(num_classes=source.num_classes or (365 if source.format == "places365" else 1000)).state_dict()
        path = folder / f"{source.name}.pth"
        if source.format == "places365":  # CSAIL's layout: DataParallel keys under "state_dict"
            torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
        else:  # torchvision / checkpoint: a plain state_dict file
            torch.save(state, path)
        overrides.append(f"sources.{i}.weights={path}")
    return overrides


def bench_overrides(cfg, workdir: Path, args, mode: str, batch: int) -> list[str]:
    """What the bench changes in a shipped config: data, batch, caches' place, and the mode's cache."""
    cache, memory_gb = MODES[mode]
    root = workdir / "ucf101.h5" if cfg.data.dataset == "frames" else workdir  # `frames` names the store itself
    return [f"data.root={root}", f"data.batch_size={batch}", f"data.workers={args.workers}",
            f"source_cache.root={workdir / 'cache'}", f"source_cache.memory_gb={memory_gb}",
            "train.progress=false", "train.epochs=2", *(f"sources.{i}.cache={cache}" for i in range(len(cfg.sources)))]


def batch_size(workload: Workload, args) -> int:
    return load_config(workload.config).data.batch_size if workload.own_batch else args.clip_batch


def bench_config(workload: Workload, workdir: Path, args, mode: str, weights: list[str]):
    """The shipped config with the bench's overrides: everything else (target, heads, clips, the sources and
    how they see a frame) is what `make train` would run."""
    shipped = load_config(workload.config)
    return load_config(workload.config, [*weights, *bench_overrides(shipped, workdir, args, mode,
                                                                    batch_size(workload, args))])


def prepare_videos(workload: Workload, workdir: Path, args) -> None:
    """UCF-101's layout and split lists, decoded into the frame store the config reads (<root>/ucf101.h5).
    Split 1 trains on groups 2..: per_class groups give (per_class - 1) * 2 training videos of 2 classes."""
    clips = batch_size(workload, args) * args.clip_steps
    write_ucf101(workdir / "UCF-101", ["Alpha", "Beta"], per_class=-(-clips // 2) + 1, frames=workload.frames,
                 size=workload.size)
    preprocess_video.main(["--dataset", "ucf101", "--root", str(workdir / "UCF-101"), "--out",
                           str(workdir / "ucf101.h5"), "--workers", str(args.workers), "--no-progress"])


def bench_workload(workload: Workload, workdir: Path, args, accelerator) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    prepare_videos(workload, workdir, args)
    weights = write_weights(load_config(workload.config), workdir)
    experiments = {mode: Experiment(bench_config(workload, workdir, args, mode, weights), accelerator,
                                    splits=("train",)) for mode in MODES}
    cached = experiments["cached"]
    cached.sources  # read now, so that the timed build below is the cache's alone
    started = time.perf_counter()
    providers = list(cached.source_outputs.providers.values())  # built now: the work dir is new
    build_seconds = time.perf_counter() - started
    rounds = {mode: [] for mode in MODES}
    for _ in range(args.rounds_3d):  # interleaved: a load change on the machine hits every mode alike
        for mode, experiment in experiments.items():
            rounds[mode].append(time_training(experiment))
    rates = {mode: float(np.median(r)) for mode, r in rounds.items()}
    clip = cached.cfg.data
    sources = cached.sources
    return {"clips_per_s": rates, "clips_per_s_rounds": rounds,
            "cached_over_live": rates["cached"] / rates["live"],
            "in_memory_over_cached": rates["in_memory"] / rates["cached"],
            "config": workload.config, "target": cached.cfg.model.target, "head": cached.cfg.model.head,
            "batch": clip.batch_size, "clip": f"{clip.clip_length}x{clip.sample_size}x{clip.sample_size}",
            "train_videos": len(cached.train_set),
            "sources": {s.name: {"arch": s.arch, "input": list(s.input_size(clip.sample_size, clip.sample_size)),
                                 "mean": list(s.mean), "std": list(s.std), "policy": s.input} for s in sources},
            "cache": {"frames": len(providers[0].frames), "views": cached.views.count,
                      "frame_stride": cached.cfg.source_cache.frame_stride, "build_seconds": build_seconds,
                      "bytes": sum(p.path.stat().st_size for p in providers)}}


def bench_video3d(args, workdir: Path, accelerator) -> dict:
    return {name: bench_workload(workload, workdir / name, args, accelerator) for name, workload in WORKLOADS.items()}


def print_video3d_report(report: dict) -> None:
    for name, r in report.items():
        c = r["clips_per_s"]
        inputs = ", ".join(f"{n} {s['arch']} at {'x'.join(map(str, s['input']))}" for n, s in r["sources"].items())
        print(f"\n3D SSKT training ({r['config']}): {r['target']} + {r['head']} heads, {r['clip']} clips, "
              f"batch {r['batch']}, sources on each clip's middle frame ({inputs}); median of "
              f"{len(r['clips_per_s_rounds']['live'])} interleaved rounds:")
        print("| source outputs | clips/s |\n|---|---|")
        for mode, label in (("live", "live sources"), ("cached", "per-frame HDF5 cache"), ("in_memory", "cache in memory")):
            print(f"| {label} | {c[mode]:.2f} |")
        print(f"cached / live = {r['cached_over_live']:.2f}x, in memory / cached = {r['in_memory_over_cached']:.2f}x")
        k = r["cache"]
        print(f"per-frame cache build: {k['frames']} frames x {k['views']} views x {len(r['sources'])} sources in "
              f"{k['build_seconds']:.1f} s, {k['bytes'] / 2**20:.2f} MiB")
