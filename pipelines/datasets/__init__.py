"""Data set readers: `build_split(data_cfg, "train" | "test")` -> ImageSet.

Each reader reads the on-disk format itself (torchvision's classes verify md5s
against the official archives, which we do not want to depend on at read time)
and calls torchvision only to download when `data.download` is true.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from pipelines.datasets.base import ImageSet

if TYPE_CHECKING:
    from engine.config import DataConfig


class DatasetError(Exception):
    """One line naming the path or option at fault and how to fix it."""


def ensure_files(root: Path, paths: list[Path], dataset: str, download: Callable[[], object] | None) -> None:
    """Raise a DatasetError naming the missing root or file, after trying `download` if given."""
    if all(p.exists() for p in paths):
        return
    if download is not None:
        try:
            download()
        except Exception as e:  # network, disk, archive: all end the same way for the user
            reason = str(e).splitlines()[0] if str(e) else ""
            raise DatasetError(f"{dataset}: download into {root} failed: {type(e).__name__}: {reason}") from e
    first = root if not root.exists() else next((p for p in paths if not p.exists()), None)
    if first is not None:
        raise DatasetError(f"{dataset}: {first} not found; set data.download=true on a machine with network, "
                           f"or put the torchvision-format files there")


# Imported after DatasetError and ensure_files: the readers import them from this package.
from pipelines.datasets import cifar, procedural, stl10, video, voc  # noqa: E402

Reader = Callable[["DataConfig", str], "ImageSet | video.VideoSet"]

READERS: dict[str, Reader] = {
    "cifar10": cifar.read_cifar10,
    "cifar100": cifar.read_cifar100,
    "stl10": stl10.read_stl10,
    "voc2007": voc.read_voc2007,
    "procedural": procedural.read_procedural,
    **video.VIDEO_READERS,  # -> VideoSet (clips): see is_video
}

SPLITS = ("train", "test")


def is_video(dataset) -> bool:
    """Clips [B, 3, T, H, W] (a frame store) rather than images."""
    return isinstance(dataset, video.VideoSet)


def build_split(data_cfg: "DataConfig", split: str) -> "ImageSet | video.VideoSet":
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    reader = READERS.get(data_cfg.dataset)
    if reader is None:
        raise DatasetError(f"data.dataset: unknown data set {data_cfg.dataset!r}; known: {sorted(READERS)}")
    images = reader(data_cfg, split)
    # The limit is for quick trials; evaluating on a cut test set would make numbers incomparable.
    if split == "train" and data_cfg.limit is not None:
        images = images.subset(data_cfg.limit)
    return images


__all__ = ["DatasetError", "ImageSet", "READERS", "build_split", "is_video"]
