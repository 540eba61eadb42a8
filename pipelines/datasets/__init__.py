"""Data set readers: `build_split(data_cfg, "train" | "test")` -> ImageSet.

Each reader reads the on-disk format itself (torchvision's classes verify md5s
against the official archives, which we do not want to depend on at read time)
and calls torchvision only to download when `data.download` is true.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from pipelines.datasets.base import ImageSet
from foundation.errors import UserError
from foundation.registry import Registry, UnknownName

if TYPE_CHECKING:
    from pipelines.datasets.schema import BaseDataConfig


class DatasetError(UserError):
    """One line naming the path or option at fault and how to fix it."""


def ensure_files(root: Path, paths: list[Path], dataset: str, download: Callable[[], object] | None,
                 origin: str) -> None:
    """Raise one DatasetError naming every missing file, where it goes and where it comes from (`origin`:
    the archive torchvision downloads), after trying `download` if given."""
    if all(p.exists() for p in paths):
        return
    failed = ""
    if download is not None:
        try:
            download()
        except Exception as e:  # network, disk, archive: all end the same way for the user
            reason = str(e).splitlines()[0] if str(e) else ""
            failed = f"download into {root} failed: {type(e).__name__}: {reason}; "
    missing = [p for p in paths if not p.exists()]
    if not missing:
        return
    folders = sorted({str(p.parent) for p in missing})
    where = (f"{folders[0]}/{{{', '.join(p.name for p in missing)}}}" if len(folders) == 1 and len(missing) > 1
             else ", ".join(str(p) for p in missing))
    online = "" if download is not None else ", or set data.download=true on a machine with network"
    raise DatasetError(f"{dataset}: {failed}missing {where}; unpack {origin} into {root}{online}")


# Imported after DatasetError and ensure_files: the readers import them from this package.
from pipelines.datasets import cifar, image_folder, procedural, stl10, video, voc  # noqa: E402

Reader = Callable[["BaseDataConfig", str], "ImageSet | video.VideoSet"]

READERS: Registry[Reader] = Registry("data set", entries={
    "cifar10": cifar.read_cifar10,
    "cifar100": cifar.read_cifar100,
    "stl10": stl10.read_stl10,
    "voc2007": voc.read_voc2007,
    "image_folder": image_folder.read_image_folder,
    "procedural": procedural.read_procedural,
    **video.VIDEO_READERS,  # -> VideoSet (clips): see is_video
})

SPLITS = ("train", "val", "test")
VAL_SEED = 20220104  # fixed forever: the validation split must hold the same samples in every run


def is_video(dataset) -> bool:
    """Clips [B, 3, T, H, W] (a frame store) rather than images."""
    return isinstance(dataset, video.VideoSet)


def has_own_val(data_cfg: "BaseDataConfig") -> bool:
    """Whether the data set brings its own validation split (an image folder's <root>/val), which then
    chooses best.pt as data.val_fraction's split would."""
    return data_cfg.dataset == "image_folder" and image_folder.has_split(data_cfg, "val")


def build_split(data_cfg: "BaseDataConfig", split: str) -> "ImageSet | video.VideoSet":
    """`val` is the data set's own validation split where it has one (has_own_val), else the fraction
    `data.val_fraction` of the training set (the same samples every time), and `train` then the rest;
    the test split is never cut."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    try:
        reader = READERS[data_cfg.dataset]
    except UnknownName as e:
        raise DatasetError(f"data.dataset: {e}") from None
    if split == "val" and has_own_val(data_cfg):
        if getattr(data_cfg, "val_fraction", 0.0):
            raise DatasetError(f"data.val_fraction: {data_cfg.root}/val is the validation split; set it to 0")
        return reader(data_cfg, "val")
    images = reader(data_cfg, "test" if split == "test" else "train")
    if split == "test":  # evaluating on a cut test set would make numbers incomparable
        return images
    if data_cfg.limit is not None:  # quick trials
        images = images.subset(data_cfg.limit)
    fraction = getattr(data_cfg, "val_fraction", 0.0)  # images only: video runs have data.val_clips
    if not fraction:
        if split == "val":
            raise ValueError("split 'val' needs data.val_fraction > 0")
        return images
    order = np.random.default_rng(VAL_SEED).permutation(len(images))
    held_out = max(1, round(fraction * len(images)))
    if held_out >= len(images):
        raise DatasetError(f"data.val_fraction: {fraction} of {len(images)} training samples leaves none to train on")
    chosen = order[:held_out] if split == "val" else order[held_out:]
    return images.take(np.sort(chosen), split)


__all__ = ["DatasetError", "ImageSet", "READERS", "build_split", "has_own_val", "is_video"]
