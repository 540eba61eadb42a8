"""The video part of `make bench` (tools/bench.py): preprocessing and clip-loading throughput.

Preprocessing: tools/preprocess_video.py (PyAV -> HDF5 frame store) against the reference's
JPEG-folder extraction (`ffmpeg -i video -vf scale=-1:240 image_%05d.jpg`, the ffmpeg binary of
the imageio-ffmpeg wheel), both at `--short-side` (the store's default, 128; 240: the reference's
frames), the same synthetic 320x240 MPEG-4 AVIs, the same worker count.
Loading: training clips/s (T=16, 112x112, batch 8) of frame store + DALI, frame store + torch,
JPEG folder + PIL DataLoader (3D-ResNets-PyTorch's loader: PIL open, crop, bilinear resize per
frame), and the decode limit (the same clips' JPEG bytes, already in memory, decoded by DALI in a
tight loop: whole frames, the target's denominator; and only the crop boxes, as the loader decodes).
Clip rates are medians of 9 interleaved rounds, each figure measured in its own process (as a training
process holds one loader), ratios medians of the ratios within each round.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import multiprocessing
import os
import resource
import shutil
import subprocess
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import imageio_ffmpeg
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from pipelines.datasets.video import VIDEO_READERS
from pipelines.loaders import build_clip_loader
from pipelines.plan import ClipPlan
from pipelines.views import ClipViewSet, clip_frame_indices
from tools import preprocess_video
from tools.synthetic_videos import write_ucf101

T, BATCH, EPOCHS = 16, 8, 2  # clips per epoch and rounds: `make bench`'s --clips and --clip-rounds
PREPROCESS_RUNS = 3


def bench_video(args, workdir: Path, device) -> dict:
    root = workdir / "UCF-101"
    videos = write_ucf101(root, ["Alpha", "Beta"], per_class=args.videos // 2, frames=args.video_frames,
                          size=(320, 240))
    frames = args.videos // 2 * 2 * args.video_frames
    result = _bench_preprocessing(args, workdir, videos, frames)
    # args.clip_rounds interleaved rounds (default 9), medians: on a shared machine the load drifts during
    # a run, and a ratio of two figures taken a minute apart measures the drift; single rounds of DALI /
    # limit ranged 0.39-0.68 in one run, and medians of 5 came out 0.54 and 0.48 in two. Each figure in
    # its own process, kept for every round: a training process holds one loader, and with all of them in
    # the bench's process DALI / decode limit measured 0.49-0.53 against 0.56-0.66 alone (cause not found).
    rounds = {name: [] for name in CLIP_FIGURES}
    with _ClipTimers(workdir, args.workers, device, args.clips) as timers:
        for _ in range(args.clip_rounds):
            for name in CLIP_FIGURES:
                rounds[name].append(timers.time(name))
    dali = np.asarray(rounds["frame_store_dali"])
    result["train_clips_per_s"] = {name: float(np.median(rates)) for name, rates in rounds.items()}
    result["train_clips_per_s_rounds"] = rounds
    for key, other in (("dali_over_jpeg_folder", "jpeg_folder_pil"), ("dali_over_decode_limit", "decode_limit_dali"),
                       ("dali_over_crop_decode", "decode_limit_dali_crops")):
        result[key] = float(np.median(dali / np.asarray(rounds[other])))  # the ratio within each round
    return result


CLIP_FIGURES = ("frame_store_dali", "frame_store_torch", "jpeg_folder_pil", "decode_limit_dali", "decode_limit_dali_crops")


def _clip_setup(workdir: Path, clips: int):
    """The preprocessed bench videos as a training set, its clip views and its plan."""
    videos_set = VIDEO_READERS["ucf101"](types.SimpleNamespace(root=workdir, split=1), "train")
    # The videos repeated to `clips` samples (default 384: epochs of 48 batches). A loader refills its
    # pipeline at every epoch start; real epochs are long (UCF-101: ~1,200 batches of 8) and amortise
    # that, where 12-batch epochs (96 clips) made it ~12 % of the DALI loader's time (DALI / decode
    # limit 0.50 against 0.57 at 384 clips, the same run, medians of 6 interleaved rounds)
    repeat = -(-clips // len(videos_set))
    videos_set = dataclasses.replace(videos_set, rows=np.tile(videos_set.rows, repeat),
                                     labels=np.tile(videos_set.labels, repeat),
                                     frame_counts=np.tile(videos_set.frame_counts, repeat))
    views = ClipViewSet()
    return videos_set, views, ClipPlan(tuple(videos_set.frame_counts.tolist()), T, BATCH, True, views.count)


def _clip_timer(conn, name: str, workdir: Path, workers: int, device: str, clips: int) -> None:
    """In its own (spawned) process: one of CLIP_FIGURES, measured each time the bench asks."""
    # A spawned process would also spawn its loaders' workers (the reference loader's, started every
    # epoch, ran at 62 instead of 136 clips/s): start them as a training process on Linux does
    multiprocessing.set_start_method("fork", force=True)
    videos_set, views, plan = _clip_setup(workdir, clips)
    device = torch.device(device)
    loader = None
    if name.startswith("decode_limit"):
        measure = lambda first: _decode_limit(videos_set, views, plan, device, workers, crops=name.endswith("crops"))
    else:
        loader = (_FolderLoader(videos_set, workdir / "jpg", views, plan, workers) if name == "jpeg_folder_pil"
                  else build_clip_loader(name.removeprefix("frame_store_"), videos_set, views, plan, device, workers))
        measure = lambda first: _time_epochs(loader, warm_up=first)  # the first round warms the loader up
    first = True
    while conn.recv():
        conn.send(measure(first))
        first = False
    if hasattr(loader, "close"):
        loader.close()


class _ClipTimers:
    """One process per figure (not daemonic: loaders start worker processes of their own)."""

    def __init__(self, workdir: Path, workers: int, device, clips: int):
        self.args = (workdir, workers, str(device), clips)

    def __enter__(self):
        context = multiprocessing.get_context("spawn")  # no HDF5 handle or CUDA context inherited
        self.pipes, self.processes = {}, []
        for name in CLIP_FIGURES:
            ours, theirs = context.Pipe()
            process = context.Process(target=_clip_timer, args=(theirs, name, *self.args))
            process.start()
            self.pipes[name] = ours
            self.processes.append(process)
        return self

    def time(self, name: str) -> float:
        self.pipes[name].send(True)
        return self.pipes[name].recv()

    def __exit__(self, *exc):
        for pipe in self.pipes.values():
            try:
                pipe.send(False)
            except OSError:  # that process already died; its error is the one to report
                pass
        for process in self.processes:
            process.join()


def _bench_preprocessing(args, workdir: Path, videos: dict[str, Path], frames: int) -> dict:
    """The frame store and ffmpeg's JPEG folders built PREPROCESS_RUNS times each, alternately (so a
    change in the machine's load hits both); the median run counts. CPU time per frame (this process
    and its children: decoders, ffmpeg) is the figure a busy machine distorts least: ffmpeg runs ~13
    threads a process and so takes a larger share of a contended CPU than single-threaded workers.
    Leaves workdir/ucf101.h5 and workdir/jpg/ for the clip loaders."""
    store, folders = workdir / "ucf101.h5", workdir / "jpg"
    runs = {"frame_store": [], "ffmpeg_jpeg_folders": []}
    cpu = {"frame_store": [], "ffmpeg_jpeg_folders": []}
    loads = [os.getloadavg()[0]]

    def timed(name, build):
        cpu_started, started = _cpu_seconds(), time.perf_counter()
        build()
        runs[name].append(frames / (time.perf_counter() - started))
        cpu[name].append((_cpu_seconds() - cpu_started) / frames * 1e3)

    def frame_store():
        store.unlink(missing_ok=True)
        with contextlib.redirect_stdout(io.StringIO()):
            status = preprocess_video.main(["--dataset", "ucf101", "--root", str(workdir / "UCF-101"), "--out",
                                            str(store), "--workers", str(args.workers), "--short-side",
                                            str(args.short_side), "--no-progress"])
        assert status == 0, "preprocessing the benchmark videos failed"

    def jpeg_folders():
        shutil.rmtree(folders, ignore_errors=True)
        with ThreadPoolExecutor(args.workers) as pool:  # one ffmpeg process per video, `workers` at a time
            list(pool.map(lambda item: _ffmpeg_extract(item[1], folders / Path(item[0]).with_suffix(""),
                                                       args.short_side), videos.items()))

    for _ in range(PREPROCESS_RUNS):
        timed("frame_store", frame_store)
        timed("ffmpeg_jpeg_folders", jpeg_folders)
        loads.append(os.getloadavg()[0])
    jpgs = sorted(folders.rglob("*.jpg"))
    assert len(jpgs) == frames, f"ffmpeg wrote {len(jpgs)} frames, expected {frames}"
    with h5py.File(store, "r") as f:
        jpeg_bytes = int(f["frames"].shape[0])
        first_offsets = f["frame_offsets"][:2]
        stored = _jpeg_size(f["frames"][first_offsets[0]: first_offsets[1]].tobytes())
    extracted = _jpeg_size(jpgs[0].read_bytes())
    rates = {name: float(np.median(r)) for name, r in runs.items()}
    cpu_ms = {name: float(np.median(c)) for name, c in cpu.items()}
    return {
        "videos": args.videos, "frames": frames, "size": f"320x240 MPEG-4 AVI -> shorter side {args.short_side}",
        "workers": args.workers, "frame_size": {"frame_store": stored, "jpeg_folders": extracted},  # as written
        "preprocess_frames_per_s": rates, "preprocess_runs_frames_per_s": runs, "preprocess_load_average": loads,
        "store_over_ffmpeg_frames_per_s": rates["frame_store"] / rates["ffmpeg_jpeg_folders"],
        "preprocess_cpu_ms_per_frame": cpu_ms, "preprocess_runs_cpu_ms_per_frame": cpu,
        "bytes": {"frame_store_file": store.stat().st_size, "frame_store_jpeg_per_frame": jpeg_bytes / frames,
                  "jpeg_folders_files": sum(p.stat().st_size for p in jpgs),
                  "jpeg_folders_allocated": sum(p.stat().st_blocks * 512 for p in jpgs),
                  "jpeg_folders_per_frame": sum(p.stat().st_size for p in jpgs) / frames},
    }


def _jpeg_size(data: bytes) -> list[int]:
    with Image.open(io.BytesIO(data)) as image:
        return list(image.size)


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _ffmpeg_extract(video: Path, folder: Path, height: int) -> None:
    """The reference's extraction (3D-ResNets-PyTorch: `ffmpeg -i video -vf scale=-1:240 image_%05d.jpg`) at
    `height`, the shorter side of the bench's landscape videos."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", str(video),
                    "-vf", f"scale=-1:{height}", str(folder / "image_%05d.jpg")], check=True)


def _time_epochs(loader, warm_up: bool = True) -> float:
    for _ in loader.epoch(0) if warm_up else ():  # workers start, first decode
        pass
    started, seen = time.perf_counter(), 0
    for epoch in range(1, EPOCHS + 1):
        for batch in loader.epoch(epoch):
            seen += batch["image"].shape[0]
    return seen / (time.perf_counter() - started)


class _FolderClips(Dataset):
    """3D-ResNets-PyTorch's loader: one PIL open per frame file, same crop, resize and flip."""

    def __init__(self, videos, folders: Path, views: ClipViewSet):
        self.videos, self.folders, self.views = videos, folders, views

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, key):
        index, view, start = key
        folder = self.folders / self.videos.store.table.names[self.videos.rows[index]]
        box, size = None, (self.views.size, self.views.size)
        out = []
        for f in clip_frame_indices(int(self.videos.frame_counts[index]), start, T):
            with Image.open(folder / f"image_{f + 1:05d}.jpg") as img:
                img = img.convert("RGB")
                box = box or self.views.crop_box(view, img.height, img.width)
                frame = np.asarray(img.crop(box).resize(size, Image.BILINEAR))  # MultiScaleCornerCrop
            out.append(frame[:, ::-1] if self.views.flip(view) else frame)
        return torch.from_numpy(np.ascontiguousarray(np.stack(out))).permute(3, 0, 1, 2)


class _FolderLoader:
    def __init__(self, videos, folders, views, plan, workers):
        self.plan = plan
        self.dataset = _FolderClips(videos, folders, views)
        self.workers = workers

    def epoch(self, epoch):
        keys = [list(zip(b.indices.tolist(), b.views.tolist(), b.starts.tolist())) for b in self.plan(epoch)]
        for batch in DataLoader(self.dataset, batch_sampler=keys, num_workers=self.workers):
            yield {"image": batch}  # uint8 [B, 3, T, S, S], as the frame-store loaders yield


def _decode_limit(videos, views: ClipViewSet, plan, device, workers: int, crops: bool = False) -> float:
    """Clips/s of DALI decoding the same clips' JPEGs from memory: no reading, no resize, fed as the
    loader feeds them (one packed array per batch). crops=False decodes whole frames (the issue's
    limit); crops=True only each view's crop box, as the loader does (ROI decoding)."""
    from nvidia.dali import Pipeline, fn, types as dali_types
    from pipelines.dali_clips import pack_bytes
    batches = []
    for epoch in range(EPOCHS):
        for b in plan(epoch):
            jpegs, boxes = [], []
            for i, v, s in zip(b.indices.tolist(), b.views.tolist(), b.starts.tolist()):
                jpegs += videos.clip_jpegs(i, clip_frame_indices(int(videos.frame_counts[i]), s, T))
                x0, y0, x1, y1 = views.crop_box(v, *videos.frame_size(i))
                boxes += [(x0, y0, x1 - x0, y1 - y0)] * T
            boxes = np.asarray(boxes, np.int32)
            batches.append((*pack_bytes(jpegs), np.ascontiguousarray(boxes[:, :2]), np.ascontiguousarray(boxes[:, 2:])))
    gpu = torch.device(device).type == "cuda"
    pipe = Pipeline(batch_size=max(len(b[0]) for b in batches), num_threads=workers,
                    device_id=torch.cuda.current_device() if gpu else None, prefetch_queue_depth=2)
    with pipe:
        packed, lengths, anchor, shape = fn.external_source(
            source=lambda i: batches[i % len(batches)], num_outputs=4, batch=True,
            dtype=[dali_types.UINT8, dali_types.INT32, dali_types.INT32, dali_types.INT32], ndim=[1, 1, 1, 1])
        jpegs = fn.slice(packed, start=[0], shape=lengths, axes=[0])
        backend = "mixed" if gpu else "cpu"
        if crops:
            frames = fn.decoders.image_slice(jpegs, anchor, shape, axis_names="WH", device=backend,
                                             output_type=dali_types.RGB)
        else:
            frames = fn.decoders.image(jpegs, device=backend, output_type=dali_types.RGB)
        pipe.set_outputs(frames)
    pipe.build()
    pipe.run()  # warm-up
    started = time.perf_counter()
    for _ in range(len(batches)):
        (out,) = pipe.run()
    return sum(len(b[0]) for b in batches) / T / (time.perf_counter() - started)


def print_video_report(v: dict) -> None:
    p, b, c = v["preprocess_frames_per_s"], v["bytes"], v["train_clips_per_s"]
    runs, loads = v["preprocess_runs_frames_per_s"], ", ".join(f"{x:.1f}" for x in v["preprocess_load_average"])
    print(f"\nVideo preprocessing, {v['videos']} videos x {v['frames'] // v['videos']} frames ({v['size']}), "
          f"{v['workers']} workers, {len(runs['frame_store'])} alternating runs (load average {loads}):")
    print("| | frames/s (median) | runs | CPU ms/frame | bytes/frame |\n|---|---|---|---|---|")
    for name, label in (("frame_store", "PyAV -> HDF5 frame store"), ("ffmpeg_jpeg_folders", "ffmpeg CLI -> JPEG folders")):
        per_frame = b["frame_store_jpeg_per_frame" if name == "frame_store" else "jpeg_folders_per_frame"]
        print(f"| {label} | {p[name]:.0f} | {', '.join(f'{x:.0f}' for x in runs[name])} "
              f"| {v['preprocess_cpu_ms_per_frame'][name]:.2f} | {per_frame:.0f} |")
    print(f"frame store / ffmpeg = {v['store_over_ffmpeg_frames_per_s']:.2f}x; files: store "
          f"{b['frame_store_file'] / 2**20:.2f} MiB, JPEG folders {b['jpeg_folders_files'] / 2**20:.2f} MiB "
          f"({b['jpeg_folders_allocated'] / 2**20:.2f} MiB allocated)")
    print(f"\n| training clips/s (16x112x112) | median of {len(v['train_clips_per_s_rounds']['frame_store_dali'])} "
          "| rounds |\n|---|---|---|")
    for name, rate in c.items():
        print(f"| {name} | {rate:.1f} | {', '.join(f'{r:.1f}' for r in v['train_clips_per_s_rounds'][name])} |")
    print(f"DALI / JPEG folder = {v['dali_over_jpeg_folder']:.2f}x, "
          f"DALI / decode limit = {v['dali_over_decode_limit']:.2f} "
          f"(/ decoding only the crops: {v['dali_over_crop_decode']:.2f})")
