"""Exercise the GPU-only paths on tiny data and print one table: path, ok/failed, figure.

    python -m tools.gpu_check [--steps 20] [--batch 128] [--only dali,cache]        (make gpu-check)

On a machine with a CUDA GPU, in a couple of minutes:
  - DALI `mixed` decoding: JPEG files decoded by nvJPEG on the GPU (the `dali` loader on
    CUDA), compared with the CPU decoder's pixels;
  - DALI clips on the GPU: the clip loader's CUDA path (crop decoding by nvJPEG, flip and resize
    in DALI) against its CPU path on a tiny frame store;
  - bf16 and fp16 autocast: SSKT training steps (ResNet-20 + a transfer module) through the
    engine's loop under Accelerate's mixed precision (fp16 with its gradient scaler);
  - channels_last: the same steps with the model in channels_last, beside NCHW;
  - the source cache held on the GPU: a cache built by engine.source_outputs.image_cache, loaded whole onto
    the GPU, looked up by (index, view) and compared with the source itself;
  - NCCL and SyncBatchNorm across the GPUs (one process per GPU, up to 8): an all-reduce's bus
    bandwidth, and SyncBatchNorm on per-GPU slices against BatchNorm on the whole batch. With
    one GPU, NCCL is skipped and SyncBatchNorm only runs its one-process path.
Without a GPU it says so and exits 0. Exit status 1 when a check failed.
"""
from __future__ import annotations

import argparse
import functools
import os
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

SKIPPED = "skipped"


class Skip(Exception):
    """A check that does not apply on this machine (e.g. NCCL with one GPU)."""


# ---------------------------------------------------------------- the checks

def tiny_experiment(folder: Path, images: int, batch: int, precision: str = "no", channels_last: bool = False):
    """SSKT on procedural 32x32 images (ResNet-20 + a transfer module, a ResNet-8 source through its cache,
    held in memory on the device), built by the experiment builder as training builds it."""
    from accelerate.state import AcceleratorState, GradientState

    from engine.checkpoint import save_deployed
    from engine.config import Config
    from engine.experiment import Experiment
    from models.registry import build_target

    weights = folder / "source.pt"
    if not weights.exists():
        torch.manual_seed(0)
        save_deployed(build_target("resnet8", 36).state_dict(), "resnet8", 36, weights, input_size=[32, 32])
    AcceleratorState._reset_state(reset_partial_state=True)  # each check picks its own precision
    GradientState._reset_state()
    cfg = Config.model_validate({
        "data": {"dataset": "procedural", "root": str(folder / "data"), "views": 8, "loader": "resident",
                 "batch_size": batch, "procedural": {"label": "shape", "train_size": images, "test_size": 8}},
        "model": {"target": "resnet20", "head": "transfer_module"},
        "sources": [{"name": "object", "format": "checkpoint", "weights": str(weights)}],
        "source_cache": {"root": str(folder / "cache"), "memory_gb": 1.0},
        "method": {"name": "sskt"}, "optim": {"lr": 0.05, "weight_decay": 0.0},
        "train": {"epochs": 2, "progress": False, "precision": precision, "channels_last": channels_last}})
    return Experiment(cfg, splits=("train",))


def training_rate(device: torch.device, precision: str, channels_last: bool, steps: int, batch: int,
                  folder: Path) -> float:
    """Images/s of SSKT training steps through engine.loop (one warm-up batch first); the loss must stay finite."""
    from tools.bench_timing import timed_epoch

    record = timed_epoch(tiny_experiment(folder, steps * batch, batch, precision, channels_last))
    if not np.isfinite(record["train/loss"]):
        raise RuntimeError(f"{precision}: loss is {record['train/loss']}")
    return record["train/images_per_s"]


def check_autocast(precision: str):
    def check(device, args, folder):
        if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise Skip("this GPU has no bf16")
        fp32 = training_rate(device, "no", False, args.steps, args.batch, folder)
        mixed = training_rate(device, precision, False, args.steps, args.batch, folder)
        return f"{mixed:.0f} img/s ({mixed / fp32:.2f}x fp32's {fp32:.0f})"
    return check


def check_channels_last(device, args, folder):
    precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"
    nchw = training_rate(device, precision, False, args.steps, args.batch, folder)
    nhwc = training_rate(device, precision, True, args.steps, args.batch, folder)
    return f"{nhwc:.0f} img/s ({nhwc / nchw:.2f}x NCHW's {nchw:.0f}, {precision})"


def check_dali_mixed(device, args, folder):
    from PIL import Image

    from pipelines.datasets.base import ImageSet
    from pipelines.loaders import build_loader
    from pipelines.plan import train_plan
    from pipelines.views import ViewSet

    rng = np.random.default_rng(0)
    files = []
    for i in range(args.jpegs):  # VOC-like 500x375 photos, resized to 224
        path = folder / f"{i:04d}.jpg"
        smooth = rng.integers(0, 256, (15, 20, 3), dtype=np.uint8)
        Image.fromarray(smooth).resize((500, 375), Image.BICUBIC).save(path, quality=90)
        files.append(str(path))
    images = ImageSet("voc-like", "train", rng.integers(0, 20, len(files)), 20, (224, 224), files=files)
    view_set = ViewSet(pad=4, count=2)
    plan = lambda epoch: train_plan(len(images), view_set, 32, seed=0, epoch=epoch)
    gpu = build_loader("dali", images, view_set, plan, device)  # decodes "mixed" on CUDA
    cpu = build_loader("dali", images, view_set, plan, torch.device("cpu"))
    worst = max(int((a["image"].cpu().int() - b["image"].int()).abs().max()) for a, b in zip(gpu.epoch(0), cpu.epoch(0)))
    started, seen = time.perf_counter(), 0
    for b in gpu.epoch(1):
        seen += b["image"].shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate = seen / (time.perf_counter() - started)
    if worst > 16:
        raise RuntimeError(f"GPU decode differs from the CPU decoder by {worst} grey levels")
    return f"{rate:.0f} img/s (500x375 JPEG to 224; max {worst} grey levels from CPU decode)"


def check_dali_clips_mixed(device, args, folder):
    """The DALI clip loader on CUDA (nvJPEG crop decoding, DALI's flip and resize on the GPU) against
    its CPU path (libjpeg-turbo, torch's resize) on the same planned clips of a tiny frame store."""
    import contextlib
    import io
    import types

    from pipelines.datasets.video import VIDEO_READERS
    from pipelines.loaders import build_clip_loader
    from pipelines.plan import ClipPlan
    from pipelines.views import ClipViewSet
    from tools import preprocess_video
    from tools.synthetic_videos import write_ucf101

    write_ucf101(folder / "UCF-101", ["Alpha", "Beta"], per_class=4, frames=48, size=(320, 240))
    with contextlib.redirect_stdout(io.StringIO()):
        status = preprocess_video.main(["--dataset", "ucf101", "--root", str(folder / "UCF-101"), "--out",
                                        str(folder / "ucf101.h5"), "--no-progress"])
    if status != 0:
        raise RuntimeError(f"preprocessing the check's videos exited {status}")
    videos = VIDEO_READERS["ucf101"](types.SimpleNamespace(root=folder, split=1), "train")
    views = ClipViewSet()
    plan = ClipPlan(tuple(videos.frame_counts.tolist()), 16, 4, True, views.count)
    gpu = build_clip_loader("dali", videos, views, plan, device)
    cpu = build_clip_loader("dali", videos, views, plan, torch.device("cpu"))
    diffs = [(a["image"].cpu().int() - b["image"].int()).abs() for a, b in zip(gpu.epoch(0), cpu.epoch(0), strict=True)]
    mean, worst = float(torch.cat([d.flatten() for d in diffs]).float().mean()), int(max(d.max() for d in diffs))
    started, seen = time.perf_counter(), 0
    for epoch in range(1, 4):
        for b in gpu.epoch(epoch):
            seen += b["image"].shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate = seen / (time.perf_counter() - started)
    gpu.close()
    cpu.close()
    if mean > 2.0:  # decoders differ by a few levels, DALI's resize from torch's by ~1 (more at the edges)
        raise RuntimeError(f"GPU clips differ from the CPU path's by {mean:.2f} grey levels on average (max {worst})")
    return f"{rate:.0f} clips/s (16x112x112 from 171x128 JPEGs; CPU path: mean {mean:.2f}, max {worst} grey levels)"


def check_cache_on_gpu(device, args, folder):
    """The source cache as training opens it (the experiment builder, memory_gb enough to hold it): held on
    the device, equal to the source's own outputs, and its lookup rate."""
    experiment = tiny_experiment(folder, 4 * args.batch, args.batch)
    allocated = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    cached = experiment.source_outputs.providers["object"]
    batches = [b for e in range(4) for b in experiment.train_loader.epoch(e)]
    first = cached(batches[0])
    held = torch.cuda.memory_allocated(device) - allocated if device.type == "cuda" else cached.nbytes
    if not cached.in_memory or first.device.type != device.type or held < cached.nbytes:
        raise RuntimeError(f"cache not held on {device} (in memory: {cached.in_memory}, {held} bytes allocated)")
    with torch.no_grad():
        live = experiment.sources[0].to(device)(batches[0]["image"]).float()
    if not torch.allclose(first, live, atol=0.05, rtol=0.01):
        raise RuntimeError(f"cached outputs differ from the source's by {float((first - live).abs().max()):.3f}")
    started = time.perf_counter()
    for _ in range(10):
        for b in batches:
            cached(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate = 10 * sum(b["index"].numel() for b in batches) / (time.perf_counter() - started)
    return f"{rate:,.0f} lookups/s ({cached.nbytes / 2**20:.1f} MiB on {device.type})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def distributed_worker(rank: int, world: int, port: int, backend: str, out: str) -> None:
    """One process per GPU: all-reduce bus bandwidth, and SyncBatchNorm against BatchNorm on the whole batch."""
    import torch.distributed as dist
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        tensor = torch.ones(16 << 20, device=device)  # 64 MB of float32
        dist.all_reduce(tensor)
        if float(tensor[0]) != world:
            raise RuntimeError(f"all_reduce gave {float(tensor[0])}, expected {world}")
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(5):
            dist.all_reduce(tensor)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - started) / 5
        bus_gb_s = 2 * (world - 1) / world * tensor.numel() * 4 / seconds / 1e9
        result = {"all_reduce_bus_gb_s": bus_gb_s}
        if device.type == "cuda":
            result["sync_bn_max_diff"] = sync_bn_difference(rank, world, device)
        if rank == 0:
            Path(out).write_text(repr(result))
    finally:
        dist.destroy_process_group()


def sync_bn_difference(rank: int, world: int, device: torch.device) -> float:
    """SyncBatchNorm on this rank's slice vs BatchNorm on the whole batch: outputs, input grads, running stats."""
    torch.manual_seed(0)
    x = torch.randn(8 * world, 16, 8, 8, device=device)
    plain = torch.nn.BatchNorm2d(16).to(device)
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(16))).to(device)
    whole = x.clone().requires_grad_()
    expected = plain(whole)
    (expected * expected).sum().backward()
    part = x[8 * rank: 8 * (rank + 1)].clone().requires_grad_()
    got = synced(part)
    (got * got).sum().backward()
    diffs = [(got - expected[8 * rank: 8 * (rank + 1)]).abs().max(),
             (part.grad - whole.grad[8 * rank: 8 * (rank + 1)]).abs().max(),
             (synced[0].running_mean - plain.running_mean).abs().max(),
             (synced[0].running_var - plain.running_var).abs().max()]
    return float(max(diffs))


def run_distributed(world: int, backend: str) -> dict:
    """Rank 0's measurements from `world` spawned processes."""
    import ast

    import torch.multiprocessing as mp
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rank0.txt"
        mp.spawn(distributed_worker, args=(world, free_port(), backend, str(out)), nprocs=world, join=True)
        return ast.literal_eval(out.read_text())


def gpus() -> int:
    return min(torch.cuda.device_count(), 8)


@functools.cache
def nccl_result() -> dict:
    """Measured once, reported by the NCCL and the SyncBatchNorm rows."""
    return run_distributed(gpus(), "nccl")


def check_nccl(device, args, folder):
    if gpus() < 2:
        raise Skip("1 GPU: nothing to communicate with")
    return f"{nccl_result()['all_reduce_bus_gb_s']:.1f} GB/s all-reduce bus bandwidth ({gpus()} GPUs, 64 MB)"


def check_sync_bn(device, args, folder):
    if gpus() >= 2:
        diff = nccl_result()["sync_bn_max_diff"]
        if diff > 1e-4:
            raise RuntimeError(f"SyncBatchNorm differs from whole-batch BatchNorm by {diff:.2e}")
        return f"matches whole-batch BatchNorm across {gpus()} GPUs (max diff {diff:.1e})"
    # One GPU: the conversion and the one-process path, as the engine runs it with one process.
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3),
                                                                              torch.nn.BatchNorm2d(8))).to(device)
    model(torch.randn(4, 3, 16, 16, device=device)).sum().backward()
    raise Skip("1 GPU: converted and ran, but nothing to synchronise with (needs 2+ GPUs)")


CHECKS = [
    ("DALI mixed JPEG decoding", check_dali_mixed),
    ("DALI clips on the GPU", check_dali_clips_mixed),
    ("bf16 autocast training", check_autocast("bf16")),
    ("fp16 autocast training", check_autocast("fp16")),
    ("channels_last training", check_channels_last),
    ("source cache on the GPU", check_cache_on_gpu),
    ("NCCL all-reduce", check_nccl),
    ("SyncBatchNorm", check_sync_bn),
]


# ---------------------------------------------------------------- running and reporting

def selected_checks(only: str) -> list:
    words = [word.strip().lower() for word in only.split(",") if word.strip()]
    checks = [(name, check) for name, check in CHECKS if not words or any(word in name.lower() for word in words)]
    if not checks:
        raise SystemExit(f"gpu-check: --only {only!r} names none of: {'; '.join(name for name, _ in CHECKS)}")
    return checks


def run_checks(checks, device: torch.device, args) -> list[tuple[str, str, str]]:
    """(path, ok | failed | skipped, figure or the reason) for each check, each in its own scratch folder."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, check in checks:
            folder = Path(tmp) / str(len(rows))
            folder.mkdir()
            started = time.perf_counter()
            try:
                figure, status = check(device, args, folder), "ok"
            except Skip as e:
                figure, status = str(e), SKIPPED
            except Exception as e:  # one broken path must not hide the others
                if args.verbose:
                    traceback.print_exc()
                figure, status = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160], "failed"
            rows.append((name, status, figure))
            print(f"{name}: {status} ({time.perf_counter() - started:.1f} s) {figure}", flush=True)
    return rows


def table(rows) -> str:
    lines = ["| path | status | figure |", "|---|---|---|"]
    lines += [f"| {name} | {status} | {figure} |" for name, status, figure in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per setting")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--jpegs", type=int, default=256, help="JPEG files decoded by DALI")
    parser.add_argument("--only", default="", help="comma-separated words: run the checks whose names contain one "
                                                   "(case-insensitive), e.g. 'dali,autocast'")
    parser.add_argument("--verbose", action="store_true", help="print the traceback of a failed check")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing to check")
        return 0
    os.environ.setdefault("NCCL_DEBUG", "WARN")
    device = torch.device("cuda", 0)
    print(f"gpu-check on {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}")
    rows = run_checks(selected_checks(args.only), device, args)
    print("\n" + table(rows))
    return 1 if any(status == "failed" for _, status, _ in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
