"""Video data sets read from their frame store (tools/preprocess_video.py): `VIDEO_READERS[name](data_cfg, split)`.

ucf101 / hmdb51: the store is `<data.root>/<name>.h5`; frames: `data.root` is the path of any frame
store file (e.g. a procedural one). `data.split` (1..3, default 1) picks the official split.
A video that failed preprocessing is in no split.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from foundation.registry import Registry
from pipelines.datasets import DatasetError
from pipelines.frame_store import TEST, TRAIN, FrameStore, FrameStoreError, stored_size

if TYPE_CHECKING:
    from pipelines.datasets.schema import VideoDataConfig


@dataclass
class VideoSet:
    """A labelled split of a frame store: sample i is video `rows[i]` of the store."""
    name: str
    split: str
    fold: int
    store: FrameStore
    rows: np.ndarray  # int64 [N] store rows
    labels: np.ndarray  # int64 [N]
    frame_counts: np.ndarray  # int64 [N]
    num_classes: int
    class_names: list

    multilabel = False

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, count: int) -> "VideoSet":
        """The first `count` videos (quick trials: data.limit)."""
        return VideoSet(self.name, self.split, self.fold, self.store, self.rows[:count], self.labels[:count],
                        self.frame_counts[:count], self.num_classes, self.class_names)

    def frame_size(self, i: int) -> tuple[int, int]:
        """(height, width) of the stored frames of sample i."""
        t = self.store.table
        row = self.rows[i]
        w, h = stored_size(int(t.width[row]), int(t.height[row]), int(t.attrs["short_side"]))
        return h, w

    def video_names(self) -> list[str]:
        """Each video's name in the store (`<class>/<video>` for the official layouts)."""
        return [self.store.table.names[row] for row in self.rows]

    def clip_jpegs(self, i: int, frames: np.ndarray) -> list[np.ndarray]:
        return self.store.clip_jpegs(int(self.rows[i]), frames)

    @cached_property
    def fingerprint(self) -> str:
        """The store's identity (a sha256 over its inputs and settings) + the split's videos."""
        h = hashlib.sha256(f"{self.name}/{self.split}/{self.fold}/{self.store.table.attrs['identity']}".encode())
        h.update(np.ascontiguousarray(self.rows).data)
        return h.hexdigest()[:16]


# Where the official data sets' videos and split lists come from (the missing-store error names them).
ORIGINS = {
    "ucf101": "https://www.crcv.ucf.edu/data/UCF101/UCF101.rar and "
              "https://www.crcv.ucf.edu/data/UCF101/UCF101TrainTestSplits-RecognitionTask.zip",
    "hmdb51": "https://serre-lab.clps.brown.edu/wp-content/uploads/2013/10/hmdb51_org.rar and "
              "https://serre-lab.clps.brown.edu/wp-content/uploads/2013/10/test_train_splits.rar",
}


def read_video_split(name: str | None, data_cfg: "VideoDataConfig", split: str) -> VideoSet:
    """`name` None: `data_cfg.root` is the store file itself, of any data set."""
    fold = data_cfg.split  # 1..3, as the data section's schema allows
    path = Path(data_cfg.root) / f"{name}.h5" if name else Path(data_cfg.root)
    if name in ORIGINS and not path.exists():
        raise DatasetError(f"frame store {path} not found; download the {name} videos and split lists "
                           f"({ORIGINS[name]}), unpack them under one folder and build it with "
                           f"`make preprocess-video DATASET={name} ROOT=<that folder> OUT={path}`")
    try:
        store = FrameStore(path)
    except FrameStoreError as e:
        raise DatasetError(str(e)) from None
    t = store.table
    if name and t.attrs.get("dataset") != name:
        raise DatasetError(f"{path}: a frame store of {t.attrs.get('dataset')!r}, not {name}")
    name = name or str(t.attrs.get("dataset") or path.stem)
    rows = np.flatnonzero(t.splits[:, fold - 1] == (TRAIN if split == "train" else TEST))
    return VideoSet(name, split, fold, store, rows, t.labels[rows].astype(np.int64),
                    t.frame_count[rows].astype(np.int64), len(t.classes), list(t.classes))


VIDEO_READERS: Registry[Callable[..., VideoSet]] = Registry("video data set", entries={
    "ucf101": lambda data_cfg, split: read_video_split("ucf101", data_cfg, split),
    "hmdb51": lambda data_cfg, split: read_video_split("hmdb51", data_cfg, split),
    "frames": lambda data_cfg, split: read_video_split(None, data_cfg, split),
})
