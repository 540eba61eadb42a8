"""The 3D SSKT part of `make bench` (tools/bench.py --only video3d): training clips/s of a 3D
ResNet-18 with two 3D transfer modules (16x112x112 clips, two ResNet-50 sources scoring each clip's
middle frame, the paper configs' `input: reference`), through the engine's own data path
(engine.data.build_data) and the sskt method, with the sources' outputs
  - live: both sources run every step on the clip's middle frame (`cache: off`);
  - cached: the per-frame HDF5 cache (engine.source_outputs.frame_cache), read through HDF5 (memory_gb 0);
  - in memory: the same cache loaded whole onto the device (what `memory_gb` allows when it fits);
and the per-frame cache's build time and size. Weights are random: speed does not depend on them.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from torchvision.models import resnet50

from engine.checkpoint import save_deployed
from engine.config import Config
from engine.data import build_data
from engine.loop import train_one_epoch
from engine.methods import Context, build_method
from models.sources import load_sources
from pipelines.datasets import build_split
from tools import preprocess_video
from tools.synthetic_videos import write_ucf101

SOURCES = {"places365": 365, "imagenet": 1000}


def bench_config(workdir: Path, args, cache: str, memory_gb: float) -> Config:
    return Config.model_validate({
        "data": {"dataset": "ucf101", "root": str(workdir), "clip_length": 16, "sample_size": 112, "views": 4,
                 "loader": "torch", "workers": args.workers, "batch_size": args.clip_batch, "val_clips": 0,
                 "mean": [0.450097, 0.422492, 0.390098], "std": [0.0039216] * 3},
        "model": {"target": "resnet3d_18", "head": "transfer_module", "shortcut": "A"},
        "sources": [{"name": name, "format": "checkpoint", "arch": "resnet50", "weights": str(workdir / f"{name}.pt"),
                     "input": "reference", "cache": cache} for name in SOURCES],
        "method": {"name": "sskt", "aux_loss": "ce", "temperature": 1.0, "alpha": 1.0},
        "optim": {"lr": 0.01, "dampening": 0.9, "weight_decay": 1e-3},
        "source_cache": {"root": str(workdir / "cache"), "frame_stride": 4, "memory_gb": memory_gb, "batch_size": 32},
        "train": {"epochs": 2, "progress": False}, "run": {"root": str(workdir / "runs")},
    })


def time_clips(accelerator, cfg: Config, train_set, test_set) -> float:
    """Clips/s of the engine's training loop over one epoch, after a warm-up epoch."""
    torch.manual_seed(0)
    sources = load_sources(cfg.sources)
    method = build_method(cfg.method)
    method.build(Context(cfg, train_set.num_classes, False, sources))
    method.setup(accelerator, cfg.train.epochs)
    data = build_data(cfg, {"train": train_set, "test": test_set}, sources, accelerator)
    for epoch in (0, 1):  # epoch 0 warms up (allocations, cache load, worker start)
        record = train_one_epoch(accelerator, method, data.source_outputs, data.train_loader, epoch, 2, False)
    return record["train/images_per_s"]


def bench_video3d(args, workdir: Path, accelerator) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    # split 1 trains on groups 2.., so per_class groups give (per_class - 1) * 2 training videos
    write_ucf101(workdir / "UCF-101", ["Alpha", "Beta"], per_class=-(-args.clip_batch * args.clip_steps // 2) + 1,
                 frames=48, size=(160, 120))
    preprocess_video.main(["--dataset", "ucf101", "--root", str(workdir / "UCF-101"), "--out",
                           str(workdir / "ucf101.h5"), "--workers", str(args.workers), "--no-progress"])
    for name, classes in SOURCES.items():
        torch.manual_seed(len(name))
        save_deployed(resnet50(num_classes=classes).state_dict(), "resnet50", classes, workdir / f"{name}.pt")
    cfg = bench_config(workdir, args, "auto", 0.0)
    train_set, test_set = build_split(cfg.data, "train"), build_split(cfg.data, "test")

    started = time.perf_counter()
    from engine.source_outputs.frame_cache import open_frame_cache
    from engine.video import clip_view_sets
    providers = [open_frame_cache(s, train_set, clip_view_sets(cfg)[0], 16, cfg.source_cache, "rebuild", accelerator,
                                  progress=False) for s in load_sources(cfg.sources)]
    build_seconds = time.perf_counter() - started
    rates = {
        "live": time_clips(accelerator, bench_config(workdir, args, "off", 0.0), train_set, test_set),
        "cached": time_clips(accelerator, cfg, train_set, test_set),
        "in_memory": time_clips(accelerator, bench_config(workdir, args, "auto", 8.0), train_set, test_set),
    }
    return {"clips_per_s": rates, "cached_over_live": rates["cached"] / rates["live"],
            "in_memory_over_cached": rates["in_memory"] / rates["cached"], "batch": args.clip_batch,
            "clip": "16x112x112", "train_videos": len(train_set),
            "cache": {"frames": len(providers[0].frames), "views": 4, "frame_stride": 4,
                      "build_seconds": build_seconds, "bytes": sum(p.path.stat().st_size for p in providers)}}


def print_video3d_report(r: dict) -> None:
    c = r["clips_per_s"]
    print(f"\n3D SSKT training: 3D ResNet-18 + 2 3D transfer modules, {r['clip']} clips, batch {r['batch']}, "
          f"two ResNet-50 sources on each clip's middle frame (112x112):")
    print("| source outputs | clips/s |\n|---|---|")
    for name, label in (("live", "live sources"), ("cached", "per-frame HDF5 cache"), ("in_memory", "cache in memory")):
        print(f"| {label} | {c[name]:.2f} |")
    print(f"cached / live = {r['cached_over_live']:.2f}x, in memory / cached = {r['in_memory_over_cached']:.2f}x")
    k = r["cache"]
    print(f"per-frame cache build: {k['frames']} frames x {k['views']} views x 2 sources in {k['build_seconds']:.1f} s, "
          f"{k['bytes'] / 2**20:.2f} MiB")
