"""Throughput benchmarks, every figure measured in this one run on this machine.

    python -m tools.bench [--steps 8] [--batch 64] [--only training,loaders,video,video3d]   (make bench)

Sizes (steps, batch, workers, clips per 3D step) default to the device's: small on a CPU, larger on a GPU.

1. Training images/s of one SSKT config (CIFAR ResNet-20 + transfer modules, two
   ResNet-50 sources on 7/3-upsampled 32x32 images) with the sources' outputs
   - live: both sources run every step (`source.cache: off`, the reference);
   - cached: read from the HDF5 cache (engine/source_outputs/image_cache.py);
   - in memory: a plain tensor lookup, the limit a cache can approach;
   and the scratch target alone (no heads, no sources); then the scratch target and the target with
   its two transfer modules (outputs in memory) in both memory layouts, NCHW and channels_last
   (`train.channels_last`), alternated over --layout-repeats rounds: median images/s and the ratio.
2. Cache build time and size for those two sources.
3. Loader images/s: DALI vs PyTorch DataLoader (vs device-resident) for
   CIFAR-like arrays and for VOC-like JPEG files.
4. Video: preprocessing frames/s of tools/preprocess_video.py
   vs the reference's ffmpeg command line (JPEG folders), same 320x240 MPEG-4 AVIs, same worker
   count, and the bytes each writes; training clips/s (16x112x112) of frame store + DALI, frame
   store + torch, JPEG folder + PIL DataLoader (the reference), and the decode limit.
5. 3D SSKT: training clips/s of 3D ResNet-18 + 3D transfer modules with the
   sources live vs per-frame cache vs cache in memory (tools/bench_video3d.py).

Parts, for `--only` (comma-separated): training (1 and 2), loaders (3), video (4), video3d (5).
Weights are random (no download here): speed does not depend on their values.
Results: a table on stdout and bench/results.json; `--docs docs/benchmarks.md` also writes the tables into
that file's `<!-- bench:cpu -->` (or `bench:gpu`) section, with the command and machine that measured them.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from accelerate import Accelerator
from PIL import Image
from torchvision.models import resnet50

from engine.checkpoint import save_deployed
from engine.config import Config
from engine.experiment import Experiment
from engine.provenance import dated_path, provenance
from foundation.files import replace_marked
from engine.source_outputs import SourceOutputs
from pipelines.datasets.base import ImageSet
from pipelines.frame_store import DEFAULT_SHORT_SIDE
from pipelines.loaders import build_loader
from pipelines.plan import train_plan
from pipelines.views import ViewSet
from tools.bench_timing import time_training

SOURCE_NAMES = ("imagenet", "places365")
PARTS = ("training", "loaders", "video", "video3d")


def parts_list(text: str) -> tuple[str, ...]:
    parts = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [part for part in parts if part not in PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"unknown bench part(s) {unknown or [text]}: choose from {', '.join(PARTS)}")
    return parts


def write_sources(folder: Path) -> dict[str, Path]:
    """Two ResNet-50 sources with random weights (speed does not depend on them), as deployed checkpoints."""
    paths = {}
    for i, name in enumerate(SOURCE_NAMES):
        torch.manual_seed(i)
        classes = 1000 if name == "imagenet" else 365
        paths[name] = folder / f"{name}_resnet50.pt"
        save_deployed(resnet50(num_classes=classes).state_dict(), "resnet50", classes, paths[name])
    return paths


def training_config(workdir: Path, args, sources: dict[str, Path], cache: str = "auto",
                    channels_last: bool | str = "auto") -> Config:
    """SSKT (or scratch, without sources) on procedural 32x32 images: ResNet-20 + transfer modules, the
    sources on 7/3-upsampled images, `args.steps` batches of `args.batch` per epoch, 2 views per image."""
    return Config.model_validate({
        "data": {"dataset": "procedural", "root": str(workdir / "data"), "mean": [0.5] * 3, "std": [0.25] * 3,
                 "procedural": {"label": "shape", "train_size": args.steps * args.batch, "test_size": 8},
                 "views": 2, "loader": "resident", "batch_size": args.batch},
        "model": {"target": "resnet20", "head": "transfer_module"},
        "sources": [{"name": name, "format": "checkpoint", "weights": str(path), "cache": cache}
                    for name, path in sources.items()],
        "source_cache": {"root": str(workdir / "cache"), "memory_gb": 8.0, "batch_size": 128},
        "method": {"name": "sskt" if sources else "scratch"}, "optim": {"lr": 0.05},
        "train": {"epochs": 2, "progress": False, "channels_last": channels_last}})


def bench_training(args, workdir: Path, accelerator) -> dict:
    sources = write_sources(workdir)

    def experiment(sources=sources, **kw) -> Experiment:
        return Experiment(training_config(workdir, args, sources, **kw), accelerator, splits=("train",))

    cached = experiment()
    cached.sources  # read now, so that the timed build below is the cache's alone
    started = time.perf_counter()
    providers = cached.source_outputs.providers  # built now: the work dir is new
    build_seconds = time.perf_counter() - started
    cache_bytes = sum(p.path.stat().st_size for p in providers.values())
    in_memory = SourceOutputs({name: _memory_table(p, accelerator.device) for name, p in providers.items()})
    results = {  # in the layout train.channels_last: auto gives a 2D target
        "live": time_training(experiment(sources=sources, cache="off")),
        "cached": time_training(cached),
        "in_memory": time_training(experiment(sources=sources), in_memory),
        "scratch": time_training(experiment(sources={})),
    }
    layouts = {}
    for name, setting_sources, outputs in (("scratch", {}, None), ("two_transfer_modules", sources, in_memory)):
        rates = {"nchw": [], "channels_last": []}
        for _ in range(args.layout_repeats):  # alternated, so a load change on the machine hits both layouts
            for layout in rates:
                run = experiment(sources=setting_sources, channels_last=layout == "channels_last")
                rates[layout].append(time_training(run, outputs))
        medians = {layout: float(np.median(r)) for layout, r in rates.items()}
        layouts[name] = {"images_per_s": rates, "median_images_per_s": medians,
                         "channels_last_over_nchw": medians["channels_last"] / medians["nchw"]}
    samples, views = len(cached.train_set), cached.views.count
    return {
        "images_per_s": results,
        "layouts": layouts,
        "cached_speedup_over_live": results["cached"] / results["live"],
        "in_memory_over_cached": results["in_memory"] / results["cached"],
        "scratch_over_cached": results["scratch"] / results["cached"],
        "cache": {"samples": samples, "views": views, "build_seconds": build_seconds,
                  "forwards_per_s": 2 * samples * views / build_seconds, "bytes": cache_bytes},
    }


def _memory_table(cached, device):
    """The limit: the same outputs as a plain [N, K, C] tensor in memory, indexed directly."""
    with h5py.File(cached.path, "r") as f:
        table = torch.from_numpy(f["outputs"][()]).to(device)

    def lookup(batch):
        return table[batch["index"], batch["view"]].float()
    return lookup


def time_loader(kind: str, images: ImageSet, view_set, batch: int, device, workers: int) -> float:
    plan = lambda epoch: train_plan(len(images), view_set, batch, seed=0, epoch=epoch)
    loader = build_loader(kind, images, view_set, plan, device, workers)
    for _ in loader.epoch(0):  # warm-up epoch: worker start, first decode
        pass
    started, seen = time.perf_counter(), 0
    for b in loader.epoch(1):
        seen += b["image"].shape[0]
    return seen / (time.perf_counter() - started)


def bench_loaders(args, workdir: Path, device) -> dict:
    rng = np.random.default_rng(0)
    arrays = ImageSet("cifar-like", "train", rng.integers(0, 10, args.array_samples), 10, (32, 32),
                      images=rng.integers(0, 256, (args.array_samples, 32, 32, 3), dtype=np.uint8))
    folder = workdir / "jpeg"
    folder.mkdir(exist_ok=True)
    files = []
    for i in range(args.jpeg_samples):  # VOC-like: 500x375 photos, resized to 224
        path = folder / f"{i:05d}.jpg"
        smooth = rng.integers(0, 256, (375 // 25, 500 // 25, 3), dtype=np.uint8)
        Image.fromarray(smooth).resize((500, 375), Image.BICUBIC).save(path, quality=90)
        files.append(str(path))
    jpegs = ImageSet("voc-like", "train", rng.integers(0, 20, len(files)), 20, (224, 224), files=files)
    view_set = ViewSet(pad=4, count=162)
    results = {"arrays_32x32": {}, "jpeg_500x375_to_224": {}}
    for kind in ("torch", "resident", "dali"):
        results["arrays_32x32"][kind] = time_loader(kind, arrays, view_set, 128, device, args.workers)
    for kind in ("torch", "dali"):
        results["jpeg_500x375_to_224"][kind] = time_loader(kind, jpegs, view_set, 32, device, args.workers)
    return results


def print_report(report: dict) -> None:
    """Each part's table, for the parts this run measured."""
    if "training" in report:
        print_training_report(report)
    if "loaders" in report:
        print_loaders_report(report)
    if "video" in report:
        from tools.bench_video import print_video_report
        print_video_report(report["video"])
    if "video3d" in report:
        from tools.bench_video3d import print_video3d_report
        print_video3d_report(report["video3d"])


def write_docs(report: dict, docs: Path) -> None:
    """This run's tables into the device's marked section of `docs` (ValueError when it has none)."""
    kind = "cpu" if report["device"] == "cpu" else "gpu"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        print_report(report)
    lines = []
    for line in printed.getvalue().strip().splitlines():  # a markdown table needs a blank line above it
        if line.startswith("|") and lines and lines[-1] and not lines[-1].startswith("|"):
            lines.append("")
        lines.append(line)
    p = report["provenance"]
    header = (f"_Generated by `{p['command']}` on {p['device']} ({report['torch_threads']} torch threads), "
              f"torch {p['packages'].get('torch')}; do not edit by hand._\n\n")
    if not replace_marked(docs, f"bench:{kind}", header + "\n".join(lines) + "\n"):
        raise ValueError(f"{docs}: needs one '<!-- bench:{kind} -->' line and one '<!-- /bench:{kind} -->' line "
                         "after it, around the part --docs writes")


def print_training_report(report: dict) -> None:
    t = report["training"]
    ips = t["images_per_s"]
    print(f"\nSSKT training, ResNet-20 + 2 transfer modules, two ResNet-50 sources on 74x74 inputs "
          f"({report['device']}, batch {report['batch']}):")
    print("| source outputs | images/s |\n|---|---|")
    for name, label in (("live", "live sources"), ("cached", "HDF5 cache"), ("in_memory", "already in memory (limit)"),
                        ("scratch", "scratch target alone")):
        print(f"| {label} | {ips[name]:.0f} |")
    print(f"cached / live = {t['cached_speedup_over_live']:.2f}x, "
          f"in-memory / cached = {t['in_memory_over_cached']:.3f}, "
          f"scratch / cached = {t['scratch_over_cached']:.2f}")
    for name, layout in t["layouts"].items():
        m = layout["median_images_per_s"]
        print(f"ResNet-20 {name.replace('_', ' ')}: channels_last {m['channels_last']:.0f} img/s, NCHW {m['nchw']:.0f} "
              f"img/s: channels_last / NCHW = {layout['channels_last_over_nchw']:.2f}x "
              f"(median of {len(layout['images_per_s']['nchw'])} alternated rounds)")
    c = t["cache"]
    print(f"cache build: {c['samples']} samples x {c['views']} views x 2 sources in {c['build_seconds']:.1f} s "
          f"({c['forwards_per_s']:.0f} source forwards/s), {c['bytes'] / 2**20:.2f} MiB")


def print_loaders_report(report: dict) -> None:
    print("\n| loader images/s | " + " | ".join(report["loaders"]) + " |\n|---|---|---|")
    for kind in ("torch", "resident", "dali"):
        cells = [f"{report['loaders'][d][kind]:.0f}" if kind in report["loaders"][d] else "n/a" for d in report["loaders"]]
        print(f"| {kind} | " + " | ".join(cells) + " |")
    for data, rates in report["loaders"].items():
        print(f"fastest for {data}: {max(rates, key=rates.get)} "
              f"({max(rates.values()) / rates['torch']:.1f}x the torch DataLoader)")


# Workload sizes, (CPU, GPU). The CPU ones keep `make bench` to ~7 min on 2 cores; on a GPU such steps
# are launch-bound and the sources' share vanishes, so a GPU gets the sizes used on an H100 (bench/gpu-h100.json).
SIZES = {"steps": (8, 30), "batch": (64, 128), "workers": (2, 8), "clip_batch": (2, 8), "clip_steps": (2, 10)}


def sized_for_device(args: argparse.Namespace, gpu: bool) -> argparse.Namespace:
    """Fill the sizes not given on the command line with this device's defaults."""
    for name, defaults in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, defaults[gpu])
    return args


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, help="timed training steps per setting (default: 8; GPU 30)")
    parser.add_argument("--batch", type=int, help="default: 64; GPU 128")
    parser.add_argument("--layout-repeats", type=int, default=5, help="rounds of NCHW vs channels_last")
    parser.add_argument("--array-samples", type=int, default=10000)
    parser.add_argument("--jpeg-samples", type=int, default=256)
    parser.add_argument("--workers", type=int, help="loader and preprocessing workers (default: 2; GPU 8)")
    parser.add_argument("--videos", type=int, default=16, help="synthetic 320x240 MPEG-4 AVIs for the video part")
    parser.add_argument("--video-frames", type=int, default=100)
    parser.add_argument("--short-side", type=int, default=DEFAULT_SHORT_SIDE,
                        help=f"video part: stored frames' shorter side (default {DEFAULT_SHORT_SIDE}; "
                             "240: the reference's)")
    parser.add_argument("--clips", type=int, default=384, help="video part: clips per epoch (48 batches of 8)")
    parser.add_argument("--clip-rounds", type=int, default=9, help="video part: interleaved rounds of every clip figure")
    parser.add_argument("--clip-batch", type=int, help="3D SSKT part: clips per step (default: 2; GPU 8)")
    parser.add_argument("--clip-steps", type=int, help="3D SSKT part: timed steps per setting (default: 2; GPU 10)")
    parser.add_argument("--rounds-3d", type=int, default=3, help="3D SSKT part: interleaved rounds of the three modes")
    parser.add_argument("--only", type=parts_list, default=PARTS,
                        help=f"comma-separated parts to run, of {','.join(PARTS)} (default: all)")
    parser.add_argument("--docs", type=Path, help="also write the tables into this file's marked section")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: a new dated bench/results-<time>.json; --out bench/results.json updates the tracked one")
    args = sized_for_device(parser.parse_args(argv), torch.cuda.is_available())
    args.out = args.out or dated_path(Path("bench/results.json"))
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        report = {"device": str(accelerator.device), "machine": platform.processor() or platform.machine(),
                  "torch_threads": torch.get_num_threads(), "batch": args.batch, "steps": args.steps}
        if "training" in args.only:
            report["training"] = bench_training(args, workdir, accelerator)
        if "loaders" in args.only:
            report["loaders"] = bench_loaders(args, workdir, accelerator.device)
        if "video" in args.only:  # imported here: its ffmpeg baseline needs imageio-ffmpeg, the other parts do not
            from tools.bench_video import bench_video
            report["video"] = bench_video(args, workdir / "video", accelerator.device)
        if "video3d" in args.only:
            from tools.bench_video3d import bench_video3d
            report["video3d"] = bench_video3d(args, workdir / "video3d", accelerator)
    report["provenance"] = provenance(accelerator.device)  # the header summary.json carries too
    print_report(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.only != PARTS and args.out.exists():  # keep the other parts' figures from the last full run
        report = {**json.loads(args.out.read_text()), **{part: report[part] for part in args.only}}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    if args.docs:
        write_docs(report, args.docs)
        print(f"tables written to {args.docs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
