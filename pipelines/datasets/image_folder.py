"""Your own images, in torchvision's ImageFolder layout: `data.dataset: image_folder`, `data.root: DIR`.

    DIR/train/<class>/<image>      DIR/test/<class>/<image>      DIR/val/<class>/<image> (optional)

Classes are the class folders' names, sorted: label i is the i-th name, as torchvision.datasets.ImageFolder
numbers them, and the names travel in the checkpoints. Every split holds the same class folders and every
class folder at least one image: a class missing from a split (its test accuracy could not be measured, and
the labels of the splits would no longer agree) is an error naming it.

The images of a class are the files under its folder, at any depth, whose suffix is one of torchvision's
IMG_EXTENSIONS (any case). Hidden files and folders (.DS_Store, .ipynb_checkpoints) and the desktop's
Thumbs.db / desktop.ini are ignored; any other file, or a file beside the class folders, is an error naming
it: a stray file is more often a mistake in the tree (a misnamed image, a misplaced folder) than clutter.
Each file's header is read (and a PNG's checksums verified) when the split is read, so a file PIL cannot
read stops the run before training, with its path.

Images may be of any size and 8-bit mode (grey, palette, RGBA, CMYK; a 16-bit or float image is an error,
as converting it to RGB would clip it): as every file data set's, they are decoded as RGB and resized,
aspect not kept, to data.image_size x data.image_size (default 224) by
pipelines.datasets.base.decode_resized; the training views (pad-crops and flips) are taken from that.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

from pipelines.datasets import DatasetError
from pipelines.datasets.base import ImageSet

if TYPE_CHECKING:
    from pipelines.datasets.schema import ImageDataConfig

NAME = "image_folder"
IMAGE_SUFFIXES = IMG_EXTENSIONS  # torchvision ImageFolder's: .jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp
DEFAULT_SIZE = 224
IGNORED_FILES = {"thumbs.db", "desktop.ini"}  # written into folders by desktops, never data
WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}  # 16/32-bit integer and float images


def read_image_folder(data_cfg: "ImageDataConfig", split: str) -> ImageSet:
    """`split` is train, val or test: the folder of that name under data.root."""
    root = Path(data_cfg.root)
    if not root.is_dir():
        raise DatasetError(f"{NAME}: data.root {root} not found (expected {root}/train/<class>/<image> and "
                           f"{root}/test/<class>/<image>)")
    classes = class_folders(root, split)
    if split != "train":
        same_classes(root, split, classes, class_folders(root, "train"))
    files, labels = [], []
    for label, name in enumerate(classes):
        images = images_of_class(root / split / name)
        files += images
        labels += [label] * len(images)
    for path in files:
        check_readable(path)
    size = data_cfg.image_size or DEFAULT_SIZE
    return ImageSet(NAME, split, np.asarray(labels, np.int64), len(classes), (size, size), files=files,
                    class_names=classes)


def has_split(data_cfg: "ImageDataConfig", split: str) -> bool:
    """Whether data.root holds a folder for `split` (val is optional)."""
    return (Path(data_cfg.root) / split).is_dir()


def class_folders(root: Path, split: str) -> list[str]:
    folder = root / split
    if not folder.is_dir():
        raise DatasetError(f"{NAME}: {folder} not found (expected {folder}/<class>/<image>)")
    entries = [e for e in os.scandir(folder) if not ignored(e.name)]
    loose = sorted(e.name for e in entries if not e.is_dir())
    if loose:
        raise DatasetError(f"{NAME}: {folder / loose[0]}: files go inside a class folder, {folder}/<class>/"
                           + (f" ({len(loose)} such files)" if len(loose) > 1 else ""))
    classes = sorted(e.name for e in entries)
    if not classes:
        raise DatasetError(f"{NAME}: {folder} has no class folders (expected {folder}/<class>/<image>)")
    return classes


def same_classes(root: Path, split: str, classes: list[str], train_classes: list[str]) -> None:
    only_here, only_train = sorted(set(classes) - set(train_classes)), sorted(set(train_classes) - set(classes))
    if only_here or only_train:
        differences = "; ".join(part for part in (
            only_train and f"only in train: {', '.join(only_train)}",
            only_here and f"only in {split}: {', '.join(only_here)}") if part)
        raise DatasetError(f"{NAME}: {root / split} and {root / 'train'} must hold the same class folders "
                           f"({differences})")


def images_of_class(folder: Path) -> list[str]:
    """The class's image files, sorted by path, from every depth below `folder`."""
    images, others = [], []
    for parent, subfolders, names in os.walk(folder, followlinks=True):
        subfolders[:] = sorted(d for d in subfolders if not ignored(d))
        for name in sorted(names):
            if not ignored(name):
                (images if name.lower().endswith(IMAGE_SUFFIXES) else others).append(os.path.join(parent, name))
    if others:
        raise DatasetError(f"{NAME}: {others[0]} is not an image by its suffix ({' '.join(IMAGE_SUFFIXES)})"
                           + (f", nor are {len(others) - 1} more files in {folder}" if len(others) > 1 else "")
                           + f"; move them out of {folder.parent.parent}")
    if not images:
        raise DatasetError(f"{NAME}: {folder} holds no images ({' '.join(IMAGE_SUFFIXES)})")
    return images


def check_readable(path: str) -> None:
    try:
        with Image.open(path) as img:
            mode = img.mode
            img.verify()
    except Exception as e:  # PIL raises many kinds (OSError, SyntaxError, ValueError ...) for bad files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DatasetError(f"{NAME}: {path}: not an image PIL can read ({reason})") from None
    if mode in WIDE_MODES:
        raise DatasetError(f"{NAME}: {path}: a mode-{mode} image (more than 8 bits a channel), which PIL's RGB "
                           f"conversion would clip at 255; convert the images to 8 bits a channel first")


def ignored(name: str) -> bool:
    return name.startswith(".") or name.lower() in IGNORED_FILES
