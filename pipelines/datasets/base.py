"""The one shape every image data set takes once read from disk."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from PIL import Image


@dataclass
class ImageSet:
    """A labelled split: images either in memory (uint8 [N, H, W, 3]) or as encoded files.

    Files are decoded and resized to `image_size` (H, W), so that every sample
    has the same base size and views (pipelines.views) apply to all of them.
    """
    name: str
    split: str
    labels: np.ndarray  # int64 [N] for single-label, float32 [N, C] multi-hot for multi-label
    num_classes: int
    image_size: tuple[int, int]
    images: np.ndarray | None = None
    files: list[str] | None = None
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self):
        if (self.images is None) == (self.files is None):
            raise ValueError(f"{self.name}/{self.split}: give exactly one of images or files")
        if len(self.labels) != len(self):
            raise ValueError(f"{self.name}/{self.split}: {len(self.labels)} labels for {len(self)} images")

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.files)

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2

    def load_image(self, i: int) -> np.ndarray:
        """uint8 [H, W, 3] at the base size."""
        if self.images is not None:
            return self.images[i]
        return decode_resized(self.files[i], self.image_size)

    @cached_property
    def fingerprint(self) -> str:
        """Content digest: any change of pixels, files or labels changes it."""
        h = hashlib.sha256(f"{self.name}/{self.split}/{len(self)}/{self.image_size}".encode())
        if self.images is not None:
            h.update(np.ascontiguousarray(self.images).data)
        else:
            for path in self.files:
                with open(path, "rb") as f:
                    h.update(hashlib.sha256(f.read()).digest())
        h.update(np.ascontiguousarray(self.labels).data)
        return h.hexdigest()[:16]

    def subset(self, count: int) -> "ImageSet":
        """The first `count` samples (for quick trials: data.limit)."""
        return self.take(np.arange(min(count, len(self))))

    def take(self, indices: np.ndarray, split: str | None = None) -> "ImageSet":
        """The samples at `indices`, in that order (a validation split carved from train: `split="val"`)."""
        return ImageSet(self.name, split or self.split, self.labels[indices], self.num_classes, self.image_size,
                        None if self.images is None else np.ascontiguousarray(self.images[indices]),
                        None if self.files is None else [self.files[i] for i in indices], self.class_names)


def decode_resized(path: str, size: tuple[int, int]) -> np.ndarray:
    with Image.open(path) as img:
        img = img.convert("RGB")
        if img.size != (size[1], size[0]):
            img = img.resize((size[1], size[0]), Image.BILINEAR)
        return np.array(img, dtype=np.uint8)  # writable: loaders hand it to torch without a copy
