"""The top classes of image or video files, by name, from a deployed checkpoint:

    python -m engine.predict --checkpoint runs/demo/sskt/seed0/checkpoints/final.pt cat.png dog.jpg [--top 5]
    python -m engine.predict --checkpoint runs/demo/video_sskt/seed0/checkpoints/final.pt a.avi b.mp4

The checkpoint carries what it needs (architecture, class names, input size, mean and std);
each image is resized to the checkpoint's input size. A clip network (input size [T, H, W]) takes
video files instead and gives one prediction per video, scored as training scores a test video
(test/video_top1): the files are decoded into a temporary frame store exactly as
tools/preprocess_video.py prepares a data set, and the softmax is averaged over every consecutive
non-overlapping T-frame centre-crop clip. One line per file: `cat.png: cat 0.91, dog 0.05, ...`
(softmax probabilities; per-class sigmoids for multi-label models).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from engine.config import ConfigError
from models.sources import load_deployed
from engine.entry import run_entry
from engine.evaluation import score_videos
from pipelines import frame_store
from pipelines.datasets.video import VideoSet
from foundation.h5blocks import BlockFile
from pipelines.loaders import build_clip_loader
from pipelines.plan import ClipPlan
from pipelines.video_frames import convert
from pipelines.views import ClipViewSet

SHORT_SIDE = 128  # tools/preprocess_video.py's default: video frames stored as a data set's store holds them
CLIP_BATCH = 8


def read_image(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """float [3, H, W] in [0, 1] at `size`, resized as the data sets resize files (PIL bilinear)."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            pixels = np.array(img, dtype=np.uint8)
    except FileNotFoundError:
        raise ConfigError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ConfigError(f"{path}: not an image PIL can read ({e})") from None
    return torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0


def predict(checkpoint_path: Path, files: list[Path], top: int = 5, short_side: int = SHORT_SIDE
            ) -> list[list[tuple[str, float]]]:
    if not checkpoint_path.exists():
        raise ConfigError(f"{checkpoint_path}: checkpoint not found")
    network, meta = load_deployed(checkpoint_path)
    names = meta.get("class_names") or [str(i) for i in range(network.num_classes)]
    size = tuple(meta.get("input_size") or (224, 224))
    if len(size) == 3:  # a clip network: [T, H, W]
        scores = score_video_files(network, files, size, short_side)
    else:
        logits = network(torch.stack([read_image(p, size) for p in files]))
        scores = torch.sigmoid(logits) if meta.get("multilabel") else torch.softmax(logits, dim=1)
    values, indices = scores.topk(min(top, scores.shape[1]), dim=1)
    results = [[(names[i], float(v)) for v, i in zip(vs.tolist(), idx.tolist())] for vs, idx in zip(values, indices)]
    for path, result in zip(files, results):
        print(f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in result))
    return results


def score_video_files(network, files: list[Path], input_size: tuple, short_side: int = SHORT_SIDE) -> torch.Tensor:
    """[files, classes]: each video's softmax averaged over its consecutive non-overlapping centre-crop
    clips (engine.video.score_videos, the computation behind test/video_top1)."""
    length, size = int(input_size[0]), int(input_size[-1])
    with tempfile.TemporaryDirectory(prefix="predict-") as folder:
        videos = store_video_files(files, Path(folder) / "videos.h5", network.num_classes, short_side)
        plan = ClipPlan(tuple(videos.frame_counts.tolist()), length, CLIP_BATCH, train=False)
        loader = build_clip_loader("torch", videos, ClipViewSet(count=1, size=size), plan, torch.device("cpu"),
                                   workers=0)
        scores, clips = score_videos(network, loader, len(videos), network.num_classes, torch.device("cpu"))
        videos.store.close()
    return scores / clips[:, None]


def store_video_files(files: list[Path], out: Path, num_classes: int, short_side: int = SHORT_SIDE) -> VideoSet:
    """The files, decoded and resized by pipelines.video_frames.convert (as tools/preprocess_video.py
    stores them), as a frame store's test split of unlabelled videos (label -1); an unreadable file is
    one line naming it."""
    for path in files:
        if not path.is_file():
            raise ConfigError(f"{path}: video not found")
    attrs = {"format": frame_store.FORMAT_VERSION, "dataset": "predict", "classes": "[]", "short_side": short_side,
             "qscale": 3, "clip_length": 1}
    writer = BlockFile(out, "predict", attrs, len(files), error=frame_store.FrameStoreError, label="frame store",
                       create=lambda f: frame_store.create_datasets(f, len(files)))
    try:
        file, first_frame = writer.open(), 0
        for row, path in enumerate(files):
            result = convert((str(path), short_side, attrs["qscale"], os.cpu_count() or 1))
            if result.error:
                raise ConfigError(f"{path}: not a video PyAV can decode ({result.error})")
            meta = {"name": path.name, "label": -1, "fps": result.fps, "width": result.width,
                    "height": result.height, "status": frame_store.OK, "error": "",
                    "splits": (frame_store.TEST, frame_store.UNUSED, frame_store.UNUSED)}
            first_frame = frame_store.append_video(file, row, first_frame, meta, result.sizes, result.blob)
            writer.mark_done(row)
        writer.finish(frame_store.verify)
    finally:
        writer.close()
    store = frame_store.FrameStore(out)
    rows = np.arange(len(files))
    return VideoSet("predict", "test", 1, store, rows, np.full(len(files), -1, np.int64),
                    store.table.frame_count.astype(np.int64), num_classes, [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path, help="a deployed checkpoint (checkpoints/final.pt)")
    parser.add_argument("files", nargs="+", type=Path,
                        help="image files (PNG, JPEG, ...), or video files (AVI, MP4, ...) for a clip network")
    parser.add_argument("--top", type=int, default=5, help="how many classes to print per file")
    parser.add_argument("--short-side", type=int, default=SHORT_SIDE,
                        help="video frames' shorter side before the centre crop, as the training frame store's "
                             "(tools/preprocess_video.py --short-side)")
    args = parser.parse_args(argv)
    return run_entry(predict, args.checkpoint, args.files, args.top, args.short_side)


if __name__ == "__main__":
    sys.exit(main())
