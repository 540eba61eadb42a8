"""Decode every video of a data set once into an HDF5 frame store (pipelines/frame_store.py).

    python -m tools.preprocess_video --dataset ucf101 --root data/UCF-101 --out data/ucf101.h5
    python -m tools.preprocess_video --dataset mydata --layout folders --root data/my_videos --out data/mydata.h5
    make preprocess-video DATASET=hmdb51 ROOT=data/hmdb51 OUT=data/hmdb51.h5

--dataset names the data set (the store and the runs that read it carry the name); --layout says how its
videos and splits are laid out, and defaults to the name for ucf101 and hmdb51:
  ucf101   <root>/<Class>/v_<Class>_gXX_cYY.avi and ucfTrainTestlist/ (classInd.txt, trainlist0{1,2,3}.txt,
           testlist0{1,2,3}.txt), looked for in <root>, next to it, or at --splits
  hmdb51   <root>/<class>/<video>.avi and testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt
           (1 train, 2 test, 0 unused), same places
  folders  your own videos, <root>/<class>/<video>: classes are the folder names, sorted. One train/test
           split (the same in folds 1-3, so any data.split reads it): --train-list and --test-list files
           (one <class>/<video> a line, suffix optional, words after it ignored; a video in neither is
           left out), or else --test-fraction of each class's videos, drawn by a generator seeded with
           --split-seed and the class name (the same split every time; at least one video of each class
           on each side where it has two). Clips cut from one recording belong on one side: give list
           files for that. Hidden files are ignored; a file that is neither a video (by suffix) nor a
           frame folder is an error naming it.
Instead of a video file, a folder <root>/<class>/<video>/image_00001.jpg ... (3D-ResNets-PyTorch's
extracted frames) is read as is: frames already at the target size keep their JPEG bytes.
Any container and codec PyAV reads works (AVI/MPEG-4, MP4/H.264, MKV/VP9, MJPEG): VIDEO_SUFFIXES.

Every frame is resized (shorter side --short-side, aspect kept, chroma re-sited for JPEG) by a
libswscale filter graph and JPEG-encoded by PyAV's mjpeg encoder at --qscale (ffmpeg's -q:v: 2 best
.. 31), both built once per video (pipelines/video_frames.py: the one video -> stored frames function,
which engine/predict.py also uses). Videos decode sequentially, whole, in --workers processes (always
child processes: a decoder that crashes costs its video, not the job), each with cores // workers
decoder threads; every container is closed after use. Frame counts are the frames PyAV decodes,
not the header's estimate.

The job is resumable (a rerun continues after the last stored video and ends with the same content)
and atomic (the store gets its name only when complete and verified); Ctrl-C and SIGTERM close the
partial file cleanly. A video that cannot be decoded, or whose decoder process dies, is reported
(file, error) and left out; one shorter than --clip-length is kept (loop padding) and flagged.
Exit status: 0 all videos stored, 3 finished with failures, 2 bad input (a missing or malformed
split file ...), 130 interrupted (rerun to resume).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import hashlib
import json
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from pipelines import frame_store
from pipelines.frame_store import FAILED, OK, SHORT, TEST, TRAIN, UNUSED, FrameStoreError
from foundation.h5blocks import BlockFile
from foundation.errors import UserError
from pipelines.video_frames import ENCODING, VIDEO_SUFFIXES, Converted, convert

EXIT_OK, EXIT_BAD_INPUT, EXIT_FAILURES, EXIT_INTERRUPTED = 0, 2, 3, 130
LOG_EVERY_S = 30  # plain progress lines when stderr is not a terminal


class InputError(UserError):
    """Bad input that stops the job: one line naming the file."""


@dataclass(frozen=True)
class Entry:
    name: str  # "<class>/<video stem>"
    label: int
    splits: tuple[int, int, int]  # UNUSED / TRAIN / TEST per official split
    source: str | None  # video file or JPEG folder; None when absent on disk


# ---------------------------------------------------------------- data set layouts

def find_splits(root: Path, folder: str, given: Path | None) -> Path:
    candidates = [given] if given else [root / folder, root.parent / folder]
    for path in candidates:
        if path.is_dir():
            return path
    raise InputError(f"split files not found: {candidates[0]} (give --splits DIR holding {folder}/'s files)")


def ucf101_entries(root: Path, splits: Path | None) -> tuple[list[Entry], list[str]]:
    folder = find_splits(root, "ucfTrainTestlist", splits)
    class_file = folder / "classInd.txt"
    classes = [name for _, name in _rows(class_file, "<index> <Class>", (2,))]
    index = {name: i for i, name in enumerate(classes)}
    memberships: dict[str, list[int]] = {}
    for k in range(3):
        for kind, flag in (("train", TRAIN), ("test", TEST)):
            path = folder / f"{kind}list0{k + 1}.txt"
            for row in _rows(path, "<Class>/<video>.avi [<label>]", (1, 2)):  # the label is the class's
                name = Path(row[0]).with_suffix("").as_posix()
                if name.split("/")[0] not in index:
                    raise InputError(f"{path}: class of {name!r} is not in {class_file}")
                memberships.setdefault(name, [UNUSED] * 3)[k] = flag
    entries = [Entry(n, index[n.split("/")[0]], tuple(s), find_source(root, n)) for n, s in sorted(memberships.items())]
    return entries, classes


def hmdb51_entries(root: Path, splits: Path | None) -> tuple[list[Entry], list[str]]:
    folder = find_splits(root, "testTrainMulti_7030_splits", splits)
    pattern = re.compile(r"(.+)_test_split([123])\.txt$")
    files = {}
    for path in folder.iterdir():
        match = pattern.match(path.name)
        if match:
            files[(match[1], int(match[2]))] = path
    classes = sorted({c for c, _ in files})
    if not classes:
        raise InputError(f"{folder}: no <class>_test_split<k>.txt files")
    memberships: dict[str, list[int]] = {}
    for label, name in enumerate(classes):
        for k in (1, 2, 3):
            path = files.get((name, k))
            if path is None:
                raise InputError(f"{folder / f'{name}_test_split{k}.txt'} not found")
            for video, flag in _rows(path, "<video>.avi <0|1|2>", (2,), last_in=("0", "1", "2")):
                memberships.setdefault(f"{name}/{Path(video).stem}", [UNUSED] * 3)[k - 1] = int(flag)
    entries = [Entry(n, classes.index(n.split("/")[0]), tuple(s), find_source(root, n))
               for n, s in sorted(memberships.items())]
    return entries, classes


def folders_entries(root: Path, args) -> tuple[list[Entry], list[str]]:
    """A plain <root>/<class>/<video> tree, split by list files or a per-class test fraction."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise InputError(f"{root}: no class folders (expected {root}/<class>/<video>)")
    videos = {}  # "<class>/<video stem>" -> source
    for name in classes:
        found = class_videos(root / name)
        if not found:
            raise InputError(f"{root / name}: no videos ({' '.join(VIDEO_SUFFIXES)}) nor frame folders")
        for source in found:
            key = f"{name}/{Path(source).stem if Path(source).is_file() else Path(source).name}"
            if key in videos:
                raise InputError(f"{source} and {videos[key]}: two videos named {key!r}; rename one")
            videos[key] = source
    if args.train_list or args.test_list:
        if not (args.train_list and args.test_list):
            raise InputError("give both --train-list and --test-list (or neither, for --test-fraction)")
        flags = listed_splits(videos, args.train_list, args.test_list)
    else:
        flags = fraction_splits(videos, classes, args.test_fraction, args.split_seed)
    entries = [Entry(key, classes.index(key.split("/")[0]), (flags[key],) * 3, videos[key]) for key in sorted(flags)]
    return entries, classes


def class_videos(folder: Path) -> list[str]:
    """The class's video files and frame folders (sorted); any other file is an error."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir() or path.suffix.lower() in VIDEO_SUFFIXES:
            found.append(str(path))
        else:
            raise InputError(f"{path}: not a video by its suffix ({' '.join(VIDEO_SUFFIXES)}) nor a frame "
                             f"folder; move it out of {folder.parent}")
    return found


def listed_splits(videos: dict[str, str], train_list: Path, test_list: Path) -> dict[str, int]:
    flags = {}
    for path, flag in ((train_list, TRAIN), (test_list, TEST)):
        for row in _rows(path, "<class>/<video> [...]", ()):
            key = Path(row[0]).with_suffix("").as_posix() if Path(row[0]).suffix.lower() in VIDEO_SUFFIXES \
                else row[0].rstrip("/")
            if key not in videos:
                raise InputError(f"{path}: {row[0]!r} is not a video under the root (<class>/<video>)")
            if flags.get(key, flag) != flag:
                raise InputError(f"{path}: {row[0]!r} is also in {train_list}")
            flags[key] = flag
    return flags


def fraction_splits(videos: dict[str, str], classes: list[str], fraction: float, seed: int) -> dict[str, int]:
    """Of each class, round(fraction x its videos) test videos (at least one, and one left to train on
    where it has two), the rest train; each class drawn by its own generator, so that adding a class or
    another class's video changes no other class's split."""
    flags = {}
    for name in classes:
        members = sorted(k for k in videos if k.split("/")[0] == name)
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        held_out = min(max(round(fraction * len(members)), 1), len(members) - 1) if fraction > 0 else 0
        test = set(rng.permutation(len(members))[:held_out].tolist())
        flags.update({k: TEST if i in test else TRAIN for i, k in enumerate(members)})
    return flags


LAYOUTS = {"ucf101": lambda root, args: ucf101_entries(root, args.splits),
           "hmdb51": lambda root, args: hmdb51_entries(root, args.splits),
           "folders": folders_entries}


def find_source(root: Path, name: str) -> str | None:
    folder = root / name
    if folder.is_dir():
        return str(folder)
    for suffix in VIDEO_SUFFIXES:
        if (path := folder.with_suffix(suffix)).is_file():
            return str(path)
    return None


def _rows(path: Path, form: str, fields: tuple[int, ...], last_in: tuple[str, ...] | None = None) -> list[list[str]]:
    """The non-empty lines of a split file as words (as many as `fields` allows, any number if it is
    empty; the last one in `last_in`); anything else is one error line naming the file, line and form."""
    if not path.is_file():
        raise InputError(f"split file {path} not found")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        row = line.split()
        if row and ((fields and len(row) not in fields) or (last_in and row[-1] not in last_in)):
            raise InputError(f"{path}, line {number}: {line.strip()!r} is not '{form}'")
        if row:
            rows.append(row)
    return rows


# ---------------------------------------------------------------- decoder processes

def convert_in_order(tasks: list[tuple], workers: int) -> Iterator[Converted]:
    """`convert(task)` of every task, in order, computed by `workers` forked processes.

    A process that dies (a decoder crash, the OOM killer) breaks the pool and with it every video in
    flight: the one at the head is then converted again in a process of its own, where a second
    death is surely its own (reported as failed), and a new pool carries on after it."""
    done = 0
    while done < len(tasks):
        try:
            for result in _pool_map(tasks[done:], workers):
                done += 1
                yield result
        except BrokenProcessPool:
            done += 1
            yield _convert_alone(tasks[done - 1])


def _pool_map(tasks: list[tuple], workers: int) -> Iterator[Converted]:
    """Results in order, at most 2 videos a worker decoded ahead of the writer (bounded memory)."""
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_worker_setup)
    ahead = collections.deque()
    try:
        for task in tasks:
            ahead.append(pool.submit(convert, task))
            if len(ahead) > 2 * workers:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()
    finally:  # also on Ctrl-C: queued videos are dropped, running ones finish (a rerun redoes them)
        pool.shutdown(wait=True, cancel_futures=True)


def _convert_alone(task: tuple) -> Converted:
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_convert_and_send, args=(task, sender), daemon=True)
    process.start()
    sender.close()  # the child holds the only sending end: its death ends recv()
    try:
        result = receiver.recv()
    except EOFError:
        result = None
    receiver.close()
    process.join()
    if result is None:
        code = process.exitcode
        why = f"signal {-code} ({signal.Signals(-code).name})" if code < 0 else f"exit status {code}"
        result = Converted(np.zeros(0, np.int64), b"", error=f"decoder process died ({why})")
    return result


def _convert_and_send(task: tuple, sender) -> None:
    _worker_setup()
    sender.send(convert(task))


def _worker_setup() -> None:
    """In a decoder process: Ctrl-C and SIGTERM are for the parent (it stops the pool), and on Linux
    the kernel kills the process when the parent dies, so a killed job leaves no idle decoders."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform == "linux":
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# ---------------------------------------------------------------- the job

def store_identity(dataset: str, entries: list[Entry], classes: list[str], args) -> tuple[str, dict]:
    """Everything the store's content depends on; a different identity means a new store."""
    files = [(e.name, e.label, e.splits, e.source and _source_signature(e.source)) for e in entries]
    key = {"format": frame_store.FORMAT_VERSION, "encoding": ENCODING, "dataset": dataset, "classes": classes,
           "short_side": args.short_side, "qscale": args.qscale, "clip_length": args.clip_length, "videos": files}
    identity = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    attrs = {"format": frame_store.FORMAT_VERSION, "dataset": dataset, "classes": json.dumps(classes),
             "short_side": args.short_side, "qscale": args.qscale, "clip_length": args.clip_length}
    return identity, attrs


def _source_signature(source: str) -> list:
    path = Path(source)
    if path.is_dir():
        frames = list(path.glob("image_*.jpg"))
        return [path.name, len(frames), sum(f.stat().st_size for f in frames)]
    return [path.name, path.stat().st_size]


def preprocess(args) -> int:
    root = Path(args.root)
    if not root.is_dir():
        raise InputError(f"video root {root} not found")
    entries, classes = LAYOUTS[args.layout](root, args)
    if not entries:
        raise InputError(f"{args.dataset}: the split files list no videos")
    identity, attrs = store_identity(args.dataset, entries, classes, args)
    out = Path(args.out)
    if _complete_with(out, identity):
        print(f"frame store {out}: already complete for these videos and settings")
        return _report(out)
    workers = max(1, args.workers)
    threads = max(1, available_cores() // workers)  # workers x threads never oversubscribes the cores
    writer = BlockFile(out, identity, attrs, len(entries), error=FrameStoreError, label="frame store",
                       create=lambda f: frame_store.create_datasets(f, len(entries)))
    results = None
    try:
        file = writer.open()
        pending = writer.pending()
        if pending and pending != list(range(pending[0], len(entries))):
            raise FrameStoreError(f"frame store {writer.partial_path}: videos stored out of order; delete it")
        first_frame = frame_store.frames_written(file, file["done"][...])
        print(f"frame store {out}: {args.dataset}, {len(entries)} videos, {len(classes)} classes, "
              f"{len(entries) - len(pending)} already stored; {workers} workers x {threads} decoder threads")
        tasks = [(entries[i].source, args.short_side, args.qscale, threads) for i in pending]
        # Decoding always runs in child processes, even with one worker: a crashing decoder costs its
        # video, not the job. They are forked while the store is open, but never touch HDF5 and end
        # with os._exit (multiprocessing's fork start), so no HDF5 state of theirs reaches the file.
        results = convert_in_order(tasks, workers)
        progress = Progress(len(entries), len(entries) - len(pending), args.progress)
        for row, result in zip(pending, results):
            entry = entries[row]
            status = FAILED if result.error else SHORT if len(result.sizes) < args.clip_length else OK
            meta = {"name": entry.name, "label": entry.label, "fps": result.fps, "width": result.width,
                    "height": result.height, "status": status, "error": result.error,
                    "splits": entry.splits if status != FAILED else (UNUSED,) * 3}
            first_frame = frame_store.append_video(file, row, first_frame, meta, result.sizes, result.blob)
            writer.mark_done(row)
            progress.update(len(result.sizes))
            if result.error:
                progress.write(f"failed: {entry.source or root / entry.name}: {result.error}")
        progress.close()
        writer.finish(frame_store.verify)
    finally:
        if results is not None:
            results.close()  # stops the decoder processes
        writer.close()  # a clean close keeps the partial file resumable
    return _report(out)


def _complete_with(out: Path, identity: str) -> bool:
    try:
        table = frame_store.read_table(out)
    except FrameStoreError:
        return False
    if table.attrs.get("identity") == identity:
        return True
    print(f"frame store {out}: made from other videos or settings; rebuilding it")
    return False


def _report(out: Path) -> int:
    table = frame_store.read_table(out)
    failed = np.flatnonzero(table.status == FAILED)
    short = np.flatnonzero(table.status == SHORT)
    for i in failed:
        print(f"failed video: {table.names[i]}: {table.errors[i]}")
    for i in short:
        print(f"short video (kept, loop-padded): {table.names[i]}: {table.frame_count[i]} frames "
              f"< clip length {table.attrs['clip_length']}")
    frames = int(table.frame_count.sum())
    size = out.stat().st_size
    with h5py.File(out, "r") as f:
        jpeg_bytes = f["frames"].shape[0]
    print(f"frame store {out}: {len(table.names) - len(failed)} videos stored, {len(failed)} failed, "
          f"{len(short)} short; {frames} frames, {size / 2**20:.1f} MiB on disk "
          f"({jpeg_bytes / max(frames, 1) / 1024:.2f} KiB of JPEG per frame)")
    return EXIT_FAILURES if len(failed) else EXIT_OK


class Progress:
    """A tqdm bar (videos/s, frames/s, ETA) on a terminal; plain periodic lines in a log."""

    def __init__(self, total: int, done: int, enabled: bool):
        self.tty = enabled and sys.stderr.isatty()
        self.enabled, self.total, self.initial, self.done, self.frames = enabled, total, done, done, 0
        self.started = self.last_line = time.monotonic()
        self.bar = tqdm(total=total, initial=done, unit="video", dynamic_ncols=True, disable=not self.tty)

    def update(self, frames: int) -> None:
        self.done, self.frames = self.done + 1, self.frames + frames
        self.bar.set_postfix_str(f"{self.frames / self._elapsed():.0f} frames/s", refresh=False)
        self.bar.update(1)
        now = time.monotonic()
        if self.enabled and not self.tty and now - self.last_line >= LOG_EVERY_S:
            rate = (self.done - self.initial) / self._elapsed()
            eta = (self.total - self.done) / rate if rate else float("inf")
            print(f"preprocess: {self.done}/{self.total} videos, {rate:.1f} videos/s, "
                  f"{self.frames / self._elapsed():.0f} frames/s, ETA {eta:.0f} s", flush=True)
            self.last_line = now

    def write(self, line: str) -> None:
        (self.bar.write if self.tty else print)(line)

    def close(self) -> None:
        self.bar.close()
        if self.enabled:
            print(f"preprocess: {self.done - self.initial} videos decoded in {self._elapsed():.0f} s, "
                  f"{self.frames / self._elapsed():.0f} frames/s", flush=True)

    def _elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="the data set's name (ucf101, hmdb51, or your own)")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), help="how its videos and splits are laid out "
                        "(default: the --dataset name, for ucf101 and hmdb51)")
    parser.add_argument("--root", required=True, type=Path, help="folder of <class>/<video> files or JPEG folders")
    parser.add_argument("--out", required=True, type=Path, help="the frame store to write (.h5)")
    parser.add_argument("--splits", type=Path, help="ucf101, hmdb51: folder of the split files (default: found "
                        "next to ROOT)")
    parser.add_argument("--test-fraction", type=float, default=0.3,
                        help="folders: the fraction of each class's videos held out for test (default 0.3)")
    parser.add_argument("--split-seed", type=int, default=0, help="folders: seeds the --test-fraction draw")
    parser.add_argument("--train-list", type=Path, help="folders: the training videos, one <class>/<video> a line")
    parser.add_argument("--test-list", type=Path, help="folders: the test videos, one <class>/<video> a line")
    parser.add_argument("--short-side", type=int, default=frame_store.DEFAULT_SHORT_SIDE,
                        help=f"stored frames' shorter side in pixels (default {frame_store.DEFAULT_SHORT_SIDE}; "
                             "240: the reference's frames)")
    parser.add_argument("--qscale", type=int, default=3, help="JPEG quantiser scale, 2 (best) .. 31")
    parser.add_argument("--clip-length", type=int, default=16, help="videos with fewer frames are flagged")
    parser.add_argument("--workers", type=int, default=available_cores(), help="decoder processes (default: the cores)")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    if not 2 <= args.qscale <= 31 or args.short_side < 1 or args.clip_length < 1:
        parser.error("--qscale must be in 2..31, --short-side and --clip-length >= 1")
    args.layout = args.layout or (args.dataset if args.dataset in ("ucf101", "hmdb51") else None)
    if args.layout is None:
        parser.error(f"--layout: how are {args.dataset}'s videos laid out? ({', '.join(sorted(LAYOUTS))}; "
                     f"folders: <root>/<class>/<video>)")
    if not 0 <= args.test_fraction < 1:
        parser.error("--test-fraction must be in [0, 1)")
    if args.layout != "folders" and (args.train_list or args.test_list):
        parser.error(f"--train-list / --test-list are for --layout folders; {args.layout} has its own split files")
    with _sigterm_interrupts():
        try:
            return preprocess(args)
        except (InputError, FrameStoreError) as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:  # the partial file was closed cleanly on the way out
            print(f"interrupted: run the same command again to resume {args.out}", file=sys.stderr)
            return EXIT_INTERRUPTED


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM (a scheduler, `kill`) stops the job like Ctrl-C: the partial file is closed cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
