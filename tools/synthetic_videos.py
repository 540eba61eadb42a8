"""Small synthetic videos in the real on-disk layouts (UCF-101, HMDB-51), written with PyAV.

Used by the tests and by `make bench`: moving shapes over gradients, encoded by the real
codecs (MPEG-4 Part 2 in AVI as UCF-101 ships, H.264 in MP4), with the official split files.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def render_frames(count: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """uint8 [count, height, width, 3]: a gradient background and a disc moving across it."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(seed)
    hue = rng.uniform(0, 2 * np.pi, 3)
    frames = np.empty((count, height, width, 3), np.uint8)
    for t in range(count):
        image = np.stack([128 + 90 * np.sin(x / width * 3 + hue[c] + t / 6) * np.cos(y / height * 2 + c)
                          for c in range(3)], -1)
        cx = width * (0.3 + 0.4 * (t % 24) / 24)
        cy = height * (0.5 + 0.25 * np.sin(t / 4 + hue[0]))
        image[(x - cx) ** 2 + (y - cy) ** 2 < (min(width, height) / 5) ** 2] = (230, 40 + 10 * (seed % 20), 60)
        frames[t] = np.clip(image, 0, 255).astype(np.uint8)
    return frames


def write_video(path: Path, frames: np.ndarray, codec: str = "mpeg4", fps: int = 25, pix_fmt: str = "yuv420p") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        if codec == "mpeg4":
            stream.codec_context.qmin = stream.codec_context.qmax = 2  # near-lossless: tests compare pixels
        elif codec == "libx264":
            stream.options = {"crf": "12", "preset": "ultrafast"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def write_ucf101(root: Path, classes: list[str], per_class: int, frames: int = 24, size=(64, 48)) -> dict[str, Path]:
    """UCF-101 layout: <root>/<Class>/v_<Class>_gXX_c01.avi (MPEG-4 in AVI) + ucfTrainTestlist/.

    Groups 1..per_class; split k tests group k (the official lists hold out groups 1-7, 8-14, 15-21)."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    written, train, test = {}, [[], [], []], [[], [], []]
    for i, name in enumerate(classes):
        for g in range(1, per_class + 1):
            video = f"{name}/v_{name}_g{g:02d}_c01.avi"
            written[video] = write_video(root / video, render_frames(frames, *size, seed=i * 31 + g))
            for k in range(3):
                (test[k].append(video + "\n") if g == k + 1 else train[k].append(f"{video} {i + 1}\n"))
    for k in range(3):
        (lists / f"trainlist0{k + 1}.txt").write_text("".join(train[k]))
        (lists / f"testlist0{k + 1}.txt").write_text("".join(test[k]))
    return written


def write_hmdb51(root: Path, classes: list[str], per_class: int, frames: int = 24, size=(64, 48)) -> dict[str, Path]:
    """HMDB-51 layout: <root>/<class>/<video>.avi + testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt."""
    lists = root / "testTrainMulti_7030_splits"
    lists.mkdir(parents=True, exist_ok=True)
    written = {}
    for i, name in enumerate(classes):
        videos = [f"{name}_clip_{j}.avi" for j in range(per_class)]
        for j, video in enumerate(videos):
            written[f"{name}/{video}"] = write_video(root / name / video, render_frames(frames, *size, seed=100 + i * 7 + j))
        for k in range(1, 4):  # video j: test in split k when j % 3 == k - 1, else train; the last one unused
            flags = [0 if j == per_class - 1 else 2 if j % 3 == k - 1 else 1 for j in range(per_class)]
            (lists / f"{name}_test_split{k}.txt").write_text("".join(f"{v} {f} \n" for v, f in zip(videos, flags)))
    return written
