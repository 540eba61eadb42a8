"""The video frame store: every frame of a video data set, JPEG-encoded, in one HDF5 file.

Written once by tools/preprocess_video.py, read by the clip loaders. Layout:

    frames           uint8 [total bytes]      JPEG bytes of every frame, video after video
    frame_offsets    int64 [total frames + 1] frame f is frames[frame_offsets[f]: frame_offsets[f + 1]]
    videos/name      S [V]      path under the data set root, e.g. b"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01"
    videos/label     int64 [V]  class index (0-based) into the `classes` attribute
    videos/first_frame, frame_count   int64 [V]   the video's frames: first_frame .. first_frame + frame_count - 1
    videos/fps       float64 [V]
    videos/width, height   int32 [V]   original size (the stored frames have the shorter side `short_side`)
    videos/splits    uint8 [V, 3]   per official split 1..3: 0 unused, 1 train, 2 test
    videos/status    uint8 [V]  0 ok, 1 failed (no frames, left out of every split), 2 shorter than `clip_length`
    videos/error     S [V]      why a video failed
    done             uint8 [V]  build progress (foundation.h5blocks)
    attrs            format, dataset, classes (JSON), short_side, quality, clip_length, identity, complete

A flat byte array with an offsets index (not HDF5 variable-length arrays, which cost a heap
lookup per element and cannot be read in bulk): any frame is found in O(1) and a clip is one
contiguous read. Videos are written in order, so a resumed build ends with the same content.

Readers open the file lazily in the process that reads, after any fork: a FrameStore pickles
without its handle and reopens on first use.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from foundation.errors import UserError

FORMAT_VERSION = "sskt-frame-store-v1"
SPLITS = 3
UNUSED, TRAIN, TEST = 0, 1, 2
OK, FAILED, SHORT = 0, 1, 2
BYTE_CHUNK = 1 << 20  # bytes per HDF5 chunk of `frames`
OFFSET_CHUNK = 1 << 14  # frames per chunk of `frame_offsets`
# Stored frames' shorter side unless told otherwise: the usual size for 112-pixel clips (MMAction2's UCF-101
# C3D config resizes to it); the SSKT reference trained on 240-pixel frames (docs/fidelity.md).
DEFAULT_SHORT_SIDE = 128
NAME_BYTES, ERROR_BYTES = 256, 300


def stored_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) of a stored frame: the shorter side becomes `short_side`, aspect kept."""
    if width <= height:
        return short_side, max(1, round(height * short_side / width))
    return max(1, round(width * short_side / height)), short_side


class FrameStoreError(UserError):
    """One line naming the store file and what is wrong."""


# ---------------------------------------------------------------- writing

def create_datasets(file: h5py.File, num_videos: int) -> None:
    """The empty store for `num_videos` videos (the block writer's `create`)."""
    file.create_dataset("frames", (0,), np.uint8, maxshape=(None,), chunks=(BYTE_CHUNK,), track_times=False)
    file.create_dataset("frame_offsets", (1,), np.int64, maxshape=(None,), chunks=(OFFSET_CHUNK,), fillvalue=0,
                        track_times=False)
    videos = file.create_group("videos", track_order=False)
    for name, dtype in VIDEO_FIELDS.items():
        videos.create_dataset(name, (num_videos,), dtype, track_times=False)
    videos.create_dataset("splits", (num_videos, SPLITS), np.uint8, track_times=False)


VIDEO_FIELDS = {"name": f"S{NAME_BYTES}", "label": np.int64, "first_frame": np.int64, "frame_count": np.int64,
                "fps": np.float64, "width": np.int32, "height": np.int32, "status": np.uint8,
                "error": f"S{ERROR_BYTES}"}


def frames_written(file: h5py.File, done: np.ndarray) -> int:
    """Frames stored by the videos already done (they are written in order)."""
    finished = np.flatnonzero(done)
    if not len(finished):
        return 0
    last = finished[-1]
    return int(file["videos/first_frame"][last] + file["videos/frame_count"][last])


def append_video(file: h5py.File, row: int, first_frame: int, meta: dict, jpeg_sizes: np.ndarray, blob: bytes) -> int:
    """Write video `row` (its frames start at `first_frame`); returns the next video's first frame.

    Datasets are cut back to `first_frame` first, so whatever a killed run left after the last
    finished video is overwritten."""
    offsets = file["frame_offsets"]
    byte_start = int(offsets[first_frame])
    count = len(jpeg_sizes)
    offsets.resize((first_frame + count + 1,))
    offsets[first_frame + 1:] = byte_start + np.cumsum(jpeg_sizes, dtype=np.int64)
    frames = file["frames"]
    frames.resize((byte_start + len(blob),))
    if blob:
        frames[byte_start:] = np.frombuffer(blob, dtype=np.uint8)
    videos = file["videos"]
    values = {"first_frame": first_frame, "frame_count": count, **meta}
    for name in VIDEO_FIELDS:
        value = values[name]
        if name in ("name", "error"):
            value = value.encode()[: NAME_BYTES if name == "name" else ERROR_BYTES]
        videos[name][row] = value
    videos["splits"][row] = meta["splits"]
    return first_frame + count


def verify(file: h5py.File) -> None:
    """Offsets consistent with the byte array and the per-video counts (before publishing)."""
    offsets = file["frame_offsets"][...]
    counts, first = file["videos/frame_count"][...], file["videos/first_frame"][...]
    total = int(counts.sum())
    problem = None
    if len(offsets) != total + 1 or offsets[-1] != file["frames"].shape[0] or np.any(np.diff(offsets) <= 0):
        problem = "frame offsets do not match the stored bytes"
    elif len(counts) and np.any(first != np.concatenate([[0], np.cumsum(counts)[:-1]])):
        problem = "videos are not stored in order"
    if problem:
        raise FrameStoreError(f"frame store {file.filename}: {problem}; delete it and preprocess again")


# ---------------------------------------------------------------- reading

@dataclass(frozen=True)
class VideoTable:
    """The per-video metadata of a store, read once (small: a few arrays of V entries)."""
    names: list[str]
    labels: np.ndarray
    first_frame: np.ndarray
    frame_count: np.ndarray
    fps: np.ndarray
    width: np.ndarray
    height: np.ndarray
    splits: np.ndarray
    status: np.ndarray
    errors: list[str]
    classes: list[str]
    attrs: dict


class FrameStore:
    """Read access to a complete frame store; the HDF5 handle opens lazily in the reading process."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._frames: h5py.Dataset | None = None  # looked up once: h5py's name lookup costs ~0.1 ms a read
        self.table = read_table(self.path)
        # frame_offsets is small (8 bytes a frame: 20 MB for UCF-101): kept in memory for O(1) lookups
        self._offsets: np.ndarray | None = None

    def clip_jpegs(self, video: int, frames: np.ndarray) -> list[np.ndarray]:
        """The JPEG bytes of frames `frames` (indices within the video) in one contiguous read."""
        offsets = self.offsets
        first = int(self.table.first_frame[video])
        lo, hi = int(frames.min()) + first, int(frames.max()) + first
        base = int(offsets[lo])
        if self._frames is None:
            self._frames = self._handle()["frames"]
        data = self._frames[base: int(offsets[hi + 1])]
        return [data[offsets[first + f] - base: offsets[first + f + 1] - base] for f in frames.tolist()]

    def frame_jpeg(self, video: int, frame: int) -> np.ndarray:
        return self.clip_jpegs(video, np.array([frame]))[0]

    @property
    def offsets(self) -> np.ndarray:
        if self._offsets is None:
            self._offsets = self._handle()["frame_offsets"][...]
        return self._offsets

    def _handle(self) -> h5py.File:
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file, self._frames = None, None

    def __getstate__(self):
        # An open HDF5 handle must not cross a fork or a pickle: the other process reopens lazily.
        return {**self.__dict__, "_file": None, "_frames": None}


def read_table(path: Path) -> VideoTable:
    if not path.exists():
        raise FrameStoreError(f"frame store {path} not found; build it with "
                              f"`make preprocess-video DATASET=<ucf101|hmdb51> ROOT=<videos> OUT={path}`")
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            if attrs.get("format") != FORMAT_VERSION or int(attrs.get("complete", 0)) != 1:
                raise FrameStoreError(f"frame store {path}: not a complete {FORMAT_VERSION} file "
                                      f"(format {attrs.get('format')!r}); preprocess the videos again")
            v = {name: f["videos"][name][...] for name in (*VIDEO_FIELDS, "splits")}
    except OSError as e:
        raise FrameStoreError(f"frame store {path} cannot be read ({str(e).splitlines()[0]})") from None
    return VideoTable([n.decode() for n in v["name"]], v["label"], v["first_frame"], v["frame_count"], v["fps"],
                      v["width"], v["height"], v["splits"], v["status"], [e.decode() for e in v["error"]],
                      json.loads(attrs["classes"]), attrs)
