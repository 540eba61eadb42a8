"""The top classes of image or video files, by name, from a deployed checkpoint:

    python -m engine.predict --checkpoint runs/demo/sskt/seed0/checkpoints/final.pt cat.png photos/ 'shots/*.jpg'
    python -m engine.predict --checkpoint runs/demo/video_sskt/seed0/checkpoints/final.pt a.avi clips/

Inputs are files, folders (every image file below them, at any depth, by suffix: .jpg .jpeg .png .ppm
.bmp .pgm .tif .tiff .webp; video files for a clip network: .avi .mp4 .mkv .webm .mov .mpg .mpeg .m4v;
hidden files are skipped) and glob patterns (`**` reaches any depth; quote them, or the shell expands them).
A file named or matched is read whatever its suffix. The checkpoint carries what it needs (architecture,
class names, input size, mean and std); each image is resized to the checkpoint's input size. A clip
network (input size [T, H, W]) gives one prediction per video, scored as training scores a test video
(test/video_top1): the files are decoded into a temporary frame store exactly as
tools/preprocess_video.py prepares a data set, and the softmax is averaged over every consecutive
non-overlapping T-frame centre-crop clip. One line per file on stdout: `cat.png: cat 0.910, dog 0.050, ...`
(softmax probabilities; per-class sigmoids for multi-label models).

A file that cannot be read (not an image, a broken video), or an input that names nothing, is one line on
stderr, `error: <file>: <why>`, and the other files are still predicted. Exit status: 0 every file
predicted, 2 some file failed (or a bad checkpoint), 130 interrupted.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from engine.config import ConfigError
from models.sources import load_deployed
from engine.entry import run_entry
from engine.evaluation import score_videos
from pipelines import frame_store
from pipelines.datasets.image_folder import IMAGE_SUFFIXES
from pipelines.datasets.video import VideoSet
from foundation.h5blocks import BlockFile
from pipelines.loaders import build_clip_loader
from pipelines.plan import ClipPlan
from pipelines.video_frames import VIDEO_SUFFIXES, convert
from pipelines.views import ClipViewSet

SHORT_SIDE = frame_store.DEFAULT_SHORT_SIDE  # video frames stored as tools/preprocess_video.py stores them
CLIP_BATCH = 8
IMAGE_BATCH = 64


class Unreadable(Exception):
    """One input file that cannot be predicted: the message says why."""


@dataclass
class Predictions:
    results: dict[Path, list[tuple[str, float]]] = field(default_factory=dict)  # file -> top classes, in order
    failures: dict[str, str] = field(default_factory=dict)  # input -> why it gave no prediction


def read_image(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """float [3, H, W] in [0, 1] at `size`, resized as the data sets resize files (PIL bilinear)."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            pixels = np.array(img, dtype=np.uint8)
    except FileNotFoundError:
        raise Unreadable("image not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise Unreadable(f"not an image PIL can read ({_first_line(e)})") from None
    return torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0


def predict(checkpoint_path: Path, inputs: list, top: int = 5, short_side: int = SHORT_SIDE,
            out: Predictions | None = None) -> Predictions:
    """Predict every file the inputs name (files, folders, glob patterns) into `out`; print one line per
    file on stdout, and one line per failed file or input on stderr."""
    if not checkpoint_path.exists():
        raise ConfigError(f"{checkpoint_path}: checkpoint not found")
    network, meta = load_deployed(checkpoint_path)
    names = meta.get("class_names") or [str(i) for i in range(network.num_classes)]
    size = tuple(meta.get("input_size") or (224, 224))
    clips = len(size) == 3  # a clip network: [T, H, W]
    out = out if out is not None else Predictions()
    files = find_files(inputs, VIDEO_SUFFIXES if clips else IMAGE_SUFFIXES, "video" if clips else "image", out)
    if clips:
        scored, scores = score_video_files(network, files, size, short_side, out)
        _print_top(scored, scores, names, top, out)
    else:
        for start in range(0, len(files), IMAGE_BATCH):
            scored, images = [], []
            for path in files[start:start + IMAGE_BATCH]:
                try:
                    images.append(read_image(path, size))
                    scored.append(path)
                except Unreadable as e:
                    fail(out, path, str(e))
            if scored:
                logits = network(torch.stack(images))
                scores = torch.sigmoid(logits) if meta.get("multilabel") else torch.softmax(logits, dim=1)
                _print_top(scored, scores, names, top, out)
    return out


def _print_top(files: list[Path], scores: torch.Tensor, names: list[str], top: int, out: Predictions) -> None:
    values, indices = scores.topk(min(top, scores.shape[1]), dim=1)
    for path, vs, idx in zip(files, values.tolist(), indices.tolist()):
        out.results[path] = [(names[i], float(v)) for v, i in zip(vs, idx)]
        print(f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in out.results[path]), flush=True)


def fail(out: Predictions, item, why: str) -> None:
    out.failures[str(item)] = why
    print(f"error: {item}: {why}", file=sys.stderr, flush=True)


def find_files(inputs: list, suffixes: tuple[str, ...], kind: str, out: Predictions) -> list[Path]:
    """The files the inputs name, each once, in order: a file as it is, a folder's files with `suffixes` at
    any depth (sorted), a glob pattern's matches (sorted; a matched folder is searched like a folder).
    An input that names no file is a failure of its own."""
    files = []
    for item in map(str, inputs):
        path = Path(item)
        if path.is_dir():
            found = files_below(path, suffixes)
        elif path.exists():
            found = [path]
        elif any(c in item for c in "*?["):
            found = [f for match in sorted(glob.glob(item, recursive=True))
                     for f in (files_below(Path(match), suffixes) if Path(match).is_dir() else [Path(match)])]
        else:
            fail(out, item, "no such file or folder")
            continue
        if not found:
            fail(out, item, f"no {kind} files ({' '.join(suffixes)})")
        files += found
    return list(dict.fromkeys(files))


def files_below(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    found = []
    for parent, subfolders, names in os.walk(folder, followlinks=True):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        found += [Path(parent, n) for n in sorted(names) if not n.startswith(".") and n.lower().endswith(suffixes)]
    return found


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def score_video_files(network, files: list[Path], input_size: tuple, short_side: int = SHORT_SIDE,
                      out: Predictions | None = None) -> tuple[list[Path], torch.Tensor]:
    """The files that decoded and [those files, classes]: each video's softmax averaged over its
    consecutive non-overlapping centre-crop clips (engine.evaluation.score_videos, the computation behind
    test/video_top1). A file that does not decode is one line on stderr and recorded in `out`."""
    length, size = int(input_size[0]), int(input_size[-1])
    with tempfile.TemporaryDirectory(prefix="predict-") as folder:
        videos, stored = store_video_files(files, Path(folder) / "videos.h5", network.num_classes, short_side, out)
        if not stored:
            videos.store.close()
            return [], torch.zeros(0, network.num_classes)
        plan = ClipPlan(tuple(videos.frame_counts.tolist()), length, CLIP_BATCH, train=False)
        loader = build_clip_loader("torch", videos, ClipViewSet(count=1, size=size), plan, torch.device("cpu"),
                                   workers=0)
        scores, clips = score_videos(network, loader, len(videos), network.num_classes, torch.device("cpu"))
        videos.store.close()
    return stored, scores / clips[:, None]


def store_video_files(files: list[Path], out_path: Path, num_classes: int, short_side: int = SHORT_SIDE,
                      out: Predictions | None = None) -> tuple[VideoSet, list[Path]]:
    """The files, decoded and resized by pipelines.video_frames.convert (as tools/preprocess_video.py
    stores them), as a frame store's test split of unlabelled videos (label -1), and the files it holds:
    a file that does not decode is left out (stored as failed, in no split), one line on stderr."""
    out = out if out is not None else Predictions()
    attrs = {"format": frame_store.FORMAT_VERSION, "dataset": "predict", "classes": "[]", "short_side": short_side,
             "qscale": 3, "clip_length": 1}
    writer = BlockFile(out_path, "predict", attrs, len(files), error=frame_store.FrameStoreError,
                       label="frame store", create=lambda f: frame_store.create_datasets(f, len(files)))
    stored = []
    try:
        file, first_frame = writer.open(), 0
        for row, path in enumerate(files):
            result = convert((str(path), short_side, attrs["qscale"], os.cpu_count() or 1))
            if result.error or not len(result.sizes):
                result.error = f"not a video PyAV can decode ({result.error or 'no frames'})"
                fail(out, path, result.error)
            else:
                stored.append(path)
            meta = {"name": path.name, "label": -1, "fps": result.fps, "width": result.width,
                    "height": result.height, "status": frame_store.FAILED if result.error else frame_store.OK,
                    "error": result.error, "splits": (frame_store.UNUSED if result.error else frame_store.TEST,
                                                       frame_store.UNUSED, frame_store.UNUSED)}
            first_frame = frame_store.append_video(file, row, first_frame, meta, result.sizes, result.blob)
            writer.mark_done(row)
        writer.finish(frame_store.verify)
    finally:
        writer.close()
    store = frame_store.FrameStore(out_path)
    rows = np.flatnonzero(store.table.status != frame_store.FAILED)
    return VideoSet("predict", "test", 1, store, rows, np.full(len(rows), -1, np.int64),
                    store.table.frame_count[rows].astype(np.int64), num_classes, []), stored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path, help="a deployed checkpoint (checkpoints/final.pt)")
    parser.add_argument("inputs", nargs="+", metavar="FILE|FOLDER|GLOB",
                        help="image files (PNG, JPEG, ...), or video files (AVI, MP4, ...) for a clip network; "
                             "folders (searched at any depth) and glob patterns of them")
    parser.add_argument("--top", type=int, default=5, help="how many classes to print per file")
    parser.add_argument("--short-side", type=int, default=SHORT_SIDE,
                        help="video frames' shorter side before the centre crop, as the training frame store's "
                             "(tools/preprocess_video.py --short-side)")
    args = parser.parse_args(argv)
    out = Predictions()
    return run_entry(predict, args.checkpoint, args.inputs, args.top, args.short_side, out) or (2 if out.failures else 0)


if __name__ == "__main__":
    sys.exit(main())
