"""STL-10 from torchvision's on-disk format (`stl10_binary/`): the 5k labelled train and 8k test images.

We read the binaries ourselves because torchvision.datasets.STL10 insists on the
official md5s; torchvision is only used to download.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipelines.datasets import DatasetError, ensure_files
from pipelines.datasets.base import ImageSet

if TYPE_CHECKING:
    from pipelines.datasets.schema import ImageDataConfig

FOLDER = "stl10_binary"
ORIGIN = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
SIZE = 96
DEFAULT_CLASS_NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def read_stl10(data_cfg: "ImageDataConfig", split: str) -> ImageSet:
    root = Path(data_cfg.root)
    folder = root / FOLDER
    x_path, y_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"

    def download() -> None:
        import torchvision.datasets
        torchvision.datasets.STL10(str(root), split=split, download=True)

    ensure_files(root, [x_path, y_path], "stl10", download if data_cfg.download else None, ORIGIN)

    raw = np.fromfile(x_path, dtype=np.uint8)
    if raw.size % (3 * SIZE * SIZE):
        raise DatasetError(f"stl10: {x_path}: {raw.size} bytes is not a whole number of 3x{SIZE}x{SIZE} images")
    # Each channel plane is stored column-major (the Matlab origin of the files):
    # raw[n, c, w, h] -> [n, h, w, c], the same pixels torchvision's STL10 returns.
    images = np.ascontiguousarray(raw.reshape(-1, 3, SIZE, SIZE).transpose(0, 3, 2, 1))
    labels = np.fromfile(y_path, dtype=np.uint8).astype(np.int64) - 1  # files are 1-based
    if len(labels) != len(images):
        raise DatasetError(f"stl10: {y_path}: {len(labels)} labels for {len(images)} images in {x_path}")

    names_path = folder / "class_names.txt"
    class_names = names_path.read_text().splitlines() if names_path.exists() else DEFAULT_CLASS_NAMES
    class_names = [n for n in class_names if n.strip()]
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise DatasetError(f"stl10: {y_path}: labels outside 1..{len(class_names)}")
    return ImageSet("stl10", split, labels, len(class_names), (SIZE, SIZE), images=images,
                    class_names=class_names)
