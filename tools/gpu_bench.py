"""The GPU speed rows in one run: training eager vs compiled, packed runs, loaders; one table.

    python -m tools.gpu_bench [--name h100] [--only 2d,3d,video_demo,packed,loaders] [--smoke]       (make gpu-bench)

Sized for one H100-class GPU (2d, 3d, packed and loaders in under 8 minutes; video_demo adds the demo's videos
when they are missing). Every figure is measured in this run, on random weights where a config ships none (speed
does not depend on their values), through the experiment builder and engine.loop as `make train` runs them:
  2d       CIFAR ResNet-20 from scratch, and SSKT with two transfer modules whose two ResNet-50 sources' outputs
           come from the cache held on the device; batch 128, bf16 (fp32 where there is no bf16);
           `train.compile` false vs true, alternated over --rounds epochs of --steps steps (medians).
  3d       3D ResNet-18 SSKT (configs/ucf101/resnet3d_18_scratch_sskt_PI.yaml), 16x112x112 clips from the
           frame store through its loader (DALI on the GPU where installed), sources' outputs from the
           per-frame cache in memory; eager vs compiled; and the clip loader alone (clips/s it can feed).
  video_demo whole epochs of the video demo's SSKT run (configs/demo/video_sskt.yaml: its procedural videos'
           frame store, made if missing; the committed object-like source through the per-frame cache), with
           `data.loader: auto` (DALI clips on the GPU where installed); eager vs compiled, clips/s and s/epoch.
  packed   n ResNet-20 scratch runs at once, one process each as `make reproduce JOBS=n` starts them, against
           one alone: the aggregate images/s (timed together, after every run has warmed up).
  loaders  `make bench`'s loader rows: CIFAR-like arrays (torch, resident, DALI), VOC-like JPEGs (torch, DALI).
Prints one table and writes bench/gpu-<name>.json (the rows, the sizes, provenance). Without a GPU it runs on
the CPU, which measures nothing about a GPU; --smoke shrinks every size so the whole script runs there in a
minute or two (tests/test_gpu_bench.py).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from engine.experiment import Experiment, make_accelerator
from engine.loop import train_one_epoch
from engine.provenance import provenance

PARTS = ("2d", "3d", "video_demo", "packed", "loaders")
VIDEO_CONFIG = "configs/ucf101/resnet3d_18_scratch_sskt_PI.yaml"
DEMO_VIDEO_CONFIG = "configs/demo/video_sskt.yaml"
# (full, smoke): the smoke sizes exercise every path on a CPU; the full ones fit 8 minutes of one H100
SIZES = {"steps": (40, 2), "batch": (128, 8), "rounds": (3, 1), "warmup": (5, 2), "clip_batch": (32, 2),
         "clip_steps": (8, 2), "jobs": (4, 2), "workers": (8, 1), "array_samples": (50000, 256),
         "jpeg_samples": (512, 8)}


def fresh_accelerator(cfg):
    """The config's own Accelerator (precision): Accelerate's process-wide state is reset first."""
    from accelerate.state import AcceleratorState, GradientState
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return make_accelerator(cfg)


def with_train(cfg, **train):
    return cfg.model_copy(update={"train": cfg.train.model_copy(update=train)})


def precision() -> str:
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def warm_up(experiment: Experiment, batches: int) -> None:
    """Compilation, CUDA-graph recording, cache load and first-touch allocations: outside the timed epochs."""
    from tools.bench_timing import FirstBatches

    train_one_epoch(experiment.accelerator, experiment.method, experiment.source_outputs,
                    FirstBatches(experiment.train_loader, batches), 0, 1, False)


def timed(experiment: Experiment, epoch: int) -> tuple[float, float]:
    """Images (clips) per second of one whole epoch of the real loop (its record reads the totals back: synced),
    and the epoch's wall seconds."""
    started = time.perf_counter()
    record = train_one_epoch(experiment.accelerator, experiment.method, experiment.source_outputs,
                             experiment.train_loader, epoch, epoch + 1, False)
    return record["train/images_per_s"], time.perf_counter() - started


def eager_vs_compiled(build, args) -> dict:
    """`build(compile)` -> Experiment; both warmed up, then alternated epochs; medians and the ratio."""
    modes = ("eager", "compiled")
    rates, seconds, setup, experiments = {mode: [] for mode in modes}, {mode: [] for mode in modes}, {}, {}
    for mode in modes:
        started = time.perf_counter()
        experiments[mode] = build(mode == "compiled")
        warm_up(experiments[mode], args.warmup)
        synchronize()
        setup[mode] = time.perf_counter() - started
    for r in range(args.rounds):  # alternated: a load change hits both
        for mode in modes:
            rate, wall = timed(experiments[mode], 1 + r)
            rates[mode].append(rate)
            seconds[mode].append(wall)
    medians = {mode: float(np.median(rates[mode])) for mode in modes}
    return {"per_s": medians, "rounds": rates, "setup_s": setup, "epoch_s": seconds,
            "compiled_over_eager": medians["compiled"] / medians["eager"],
            "loader": type(experiments["eager"].train_loader).__name__}


# ---------------------------------------------------------------- 2D

def bench_2d(args, workdir: Path) -> dict:
    from tools.bench import training_config, write_sources

    sources = write_sources(workdir)

    def build(name, setting_sources):
        def experiment(compiled: bool) -> Experiment:
            cfg = with_train(training_config(workdir / name, args, setting_sources), precision=precision(),
                             compile=compiled)
            return Experiment(cfg, fresh_accelerator(cfg), splits=("train",))
        return experiment

    return {"scratch": eager_vs_compiled(build("scratch", {}), args),
            "two_transfer_modules": eager_vs_compiled(build("sskt", sources), args)}


# ---------------------------------------------------------------- 3D

def bench_3d(args, workdir: Path) -> dict:
    from engine.config import load_config
    from tools.bench_video3d import WORKLOADS, bench_overrides, prepare_videos, write_weights

    workdir.mkdir(parents=True, exist_ok=True)
    prepare_videos(WORKLOADS["resnet3d_18"], workdir, args)
    shipped = load_config(VIDEO_CONFIG)
    weights = write_weights(shipped, workdir)
    smaller = ["data.clip_length=4", "data.sample_size=32", "data.views=2"] if args.smoke else []
    overrides = [*weights, *bench_overrides(shipped, workdir, args, "in_memory", args.clip_batch), *smaller]
    result = clip_training(VIDEO_CONFIG, overrides, args)
    cfg = load_config(VIDEO_CONFIG, overrides)
    loader = Experiment(cfg, fresh_accelerator(cfg), splits=("train",), sources=False).train_loader  # timed alone
    for _ in loader.epoch(0):  # warm-up: workers, first decode
        pass
    started, clips = time.perf_counter(), 0
    for batch in loader.epoch(1):
        clips += batch["image"].shape[0]
    synchronize()
    loader_rate = clips / (time.perf_counter() - started)
    result.update(loader_per_s=loader_rate, loader_over_step=loader_rate / max(result["per_s"].values()))
    return result


def clip_training(config: str, overrides: list[str], args) -> dict:
    """eager_vs_compiled on a shipped video config with the bench's overrides, its network and clip named."""
    from engine.config import load_config

    def experiment(compiled: bool) -> Experiment:
        cfg = with_train(load_config(config, overrides), precision=precision(), compile=compiled)
        return Experiment(cfg, fresh_accelerator(cfg), splits=("train",))

    result = eager_vs_compiled(experiment, args)
    cfg = load_config(config, overrides)
    result.update(target=cfg.model.target, batch=cfg.data.batch_size,
                  clip=f"{cfg.data.clip_length}x{cfg.data.sample_size}x{cfg.data.sample_size}")
    return result


# ---------------------------------------------------------------- the video demo

def bench_video_demo(args, workdir: Path) -> dict:
    """Whole training epochs of `make train CONFIG=configs/demo/video_sskt.yaml`, in bf16 on a GPU, with the clip
    loader `auto` picks; its frame store is the config's own (made here if missing, as `make train` makes it),
    or at --smoke a 54-video one in the work dir."""
    from tools.demo_video import prepare_config

    workdir.mkdir(parents=True, exist_ok=True)
    small = [f"data.root={workdir / 'videos.h5'}", "data.procedural.groups=9", "data.procedural.clips=1"]
    overrides = [*(small if args.smoke else []), "data.loader=auto", f"data.workers={args.workers}",
                 f"source_cache.root={workdir / 'cache'}", "train.progress=false"]
    prepare_config(DEMO_VIDEO_CONFIG, overrides)
    return clip_training(DEMO_VIDEO_CONFIG, overrides, args)


# ---------------------------------------------------------------- packed runs

def bench_packed(args, workdir: Path) -> dict:
    """Aggregate images/s of `jobs` ResNet-20 scratch runs at once against one alone (train.compile: auto)."""
    return {"one": packed_rate(1, args, workdir / "one"), "jobs": args.jobs,
            "packed": packed_rate(args.jobs, args, workdir / "packed")}


def packed_rate(jobs: int, args, workdir: Path) -> float:
    workdir.mkdir(parents=True)
    command = [sys.executable, "-m", "tools.gpu_bench", "--worker", str(workdir), "--jobs", str(jobs),
               "--steps", str(args.steps), "--batch", str(args.batch), "--warmup", str(args.warmup)]
    workers = [subprocess.Popen([*command, "--worker-index", str(i)]) for i in range(jobs)]
    failed = [w.args[-1] for w in workers if w.wait() != 0]
    if failed:
        raise RuntimeError(f"packed runs: worker(s) {failed} failed")
    return sum(json.loads((workdir / f"rate{i}.json").read_text())["images_per_s"] for i in range(jobs))


def packed_worker(args) -> int:
    """One of the packed runs: warm up, wait for every other run to be warm, then one timed epoch."""
    from tools.bench import training_config

    folder = Path(args.worker)
    own = folder / f"work{args.worker_index}"
    cfg = with_train(training_config(own, args, {}), precision=precision(), compile="auto")
    experiment = Experiment(cfg, fresh_accelerator(cfg), splits=("train",))
    warm_up(experiment, args.warmup)
    synchronize()
    (folder / f"ready{args.worker_index}").touch()
    deadline = time.monotonic() + 600
    while len(list(folder.glob("ready*"))) < args.jobs:
        if time.monotonic() > deadline:
            raise RuntimeError("packed runs: the other runs never got ready")
        time.sleep(0.05)
    (folder / f"rate{args.worker_index}.json").write_text(json.dumps({"images_per_s": timed(experiment, 1)[0]}))
    return 0


# ---------------------------------------------------------------- loaders

def bench_loaders(args, workdir: Path) -> dict:
    from tools.bench import bench_loaders as loader_rows

    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    workdir.mkdir(parents=True)
    return loader_rows(args, workdir, device)


# ---------------------------------------------------------------- the table

def rows(report: dict) -> list[tuple[str, str, str]]:
    """(row, figure, comparison) in the table's order."""
    out = []
    if "2d" in report:
        for name, label in (("scratch", "ResNet-20 scratch"), ("two_transfer_modules", "ResNet-20 SSKT, 2 modules")):
            r = report["2d"][name]
            out += [(f"{label}, eager", f"{r['per_s']['eager']:,.0f} img/s", ""),
                    (f"{label}, compiled", f"{r['per_s']['compiled']:,.0f} img/s",
                     f"{r['compiled_over_eager']:.2f}x eager (compile + warm-up {r['setup_s']['compiled']:.0f} s)")]
    if "3d" in report:
        r = report["3d"]
        label = f"3D ResNet-18 SSKT, {r['clip']}, batch {r['batch']}"
        out += [(f"{label}, eager", f"{r['per_s']['eager']:,.1f} clips/s", ""),
                (f"{label}, compiled", f"{r['per_s']['compiled']:,.1f} clips/s",
                 f"{r['compiled_over_eager']:.2f}x eager (compile + warm-up {r['setup_s']['compiled']:.0f} s)"),
                (f"clip loader alone ({r['loader']})", f"{r['loader_per_s']:,.1f} clips/s",
                 f"{r['loader_over_step']:.2f}x the faster step")]
    if "video_demo" in report:
        r = report["video_demo"]
        label = f"video demo SSKT epoch ({r['target']}, {r['clip']}, batch {r['batch']}, {r['loader']})"
        for mode in ("eager", "compiled"):
            epoch_s = float(np.median(r["epoch_s"][mode]))
            against = (f"{epoch_s:.1f} s an epoch" if mode == "eager" else
                       f"{r['compiled_over_eager']:.2f}x eager, {epoch_s:.1f} s an epoch")
            out.append((f"{label}, {mode}", f"{r['per_s'][mode]:,.1f} clips/s", against))
    if "packed" in report:
        r = report["packed"]
        out += [("ResNet-20 scratch, 1 run", f"{r['one']:,.0f} img/s", ""),
                (f"ResNet-20 scratch, {r['jobs']} runs at once", f"{r['packed']:,.0f} img/s in all",
                 f"{r['packed'] / r['one']:.2f}x one run")]
    if "loaders" in report:
        for data, rates in report["loaders"].items():
            for kind, rate in rates.items():
                out.append((f"loader {kind}, {data}", f"{rate:,.0f} img/s", f"{rate / rates['torch']:.2f}x torch"))
    return out


def table(report: dict) -> str:
    lines = ["| row | figure | against |", "|---|---|---|"]
    return "\n".join(lines + [f"| {row} | {figure} | {against} |" for row, figure, against in rows(report)])


def device_name() -> str:
    """`h100` from "NVIDIA H100 80GB HBM3"; `cpu` without a GPU."""
    if not torch.cuda.is_available():
        return "cpu"
    words = re.findall(r"[a-z]+\d+[a-z]*|\d+[a-z]*|[a-z]+", torch.cuda.get_device_name(0).lower())
    models = [w for w in words if re.search(r"\d", w) and not w.endswith("gb")]
    return models[0] if models else "gpu"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", help="bench/gpu-<name>.json (default: the GPU's model, e.g. h100; cpu without one)")
    parser.add_argument("--out", type=Path, help="the JSON's path (default bench/gpu-<name>.json)")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {','.join(PARTS)}")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: every path end to end, on a CPU too")
    for name, (full, small) in SIZES.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"default {full} (--smoke: {small})")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # a packed run's folder (bench_packed starts them)
    parser.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name, (full, small) in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, small if args.smoke else full)
    args.layout_repeats = 1  # tools.bench's training_config reads these
    args.only = tuple(p.strip() for p in args.only.split(",") if p.strip())
    unknown = [p for p in args.only if p not in PARTS]
    if unknown or not args.only:
        parser.error(f"--only: unknown part(s) {unknown or [args.only]}; choose from {', '.join(PARTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return packed_worker(args)
    name = args.name or device_name()
    out = args.out or Path("bench") / f"gpu-{name}.json"
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (no GPU: nothing about a GPU is measured)"
    print(f"gpu-bench on {device}, torch {torch.__version__}, {precision()} precision, parts {','.join(args.only)}"
          f"{' (smoke sizes)' if args.smoke else ''}", flush=True)
    report = {"name": name, "smoke": args.smoke, "precision": precision(),
              "sizes": {key: getattr(args, key) for key in SIZES}}
    benches = {"2d": bench_2d, "3d": bench_3d, "video_demo": bench_video_demo, "packed": bench_packed,
               "loaders": bench_loaders}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.only:
            part_started = time.perf_counter()
            report[part] = benches[part](args, Path(tmp) / part)
            print(f"{part}: {time.perf_counter() - part_started:.0f} s", flush=True)
    report["seconds"] = time.perf_counter() - started
    report["table"] = table(report)
    report["provenance"] = provenance(torch.device("cuda", 0) if torch.cuda.is_available() else "cpu")
    print("\n" + report["table"] + f"\n\n{report['seconds']:.0f} s in all")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
