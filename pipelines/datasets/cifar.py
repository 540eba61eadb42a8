"""CIFAR-10/100 from torchvision's on-disk format (the official python pickle batches).

We unpickle the batches ourselves rather than through torchvision.datasets.CIFAR*,
whose load-time md5 check rejects any file but the official ones. A pickle can name any
callable to run while it loads, so the batches are read by an unpickler that knows only what
they hold (dicts, lists, strings, numbers and numpy arrays) and refuses every other name.
"""
from __future__ import annotations

import codecs
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipelines.datasets import DatasetError, ensure_files
from pipelines.datasets.base import ImageSet

if TYPE_CHECKING:
    from pipelines.datasets.schema import ImageDataConfig


@dataclass(frozen=True)
class CifarLayout:
    name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    names_key: str
    labels_key: str
    torchvision_class: str
    origin: str  # the archive torchvision downloads


CIFAR10 = CifarLayout("cifar10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                      ("test_batch",), "batches.meta", "label_names", "labels", "CIFAR10",
                      "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")
CIFAR100 = CifarLayout("cifar100", "cifar-100-python", ("train",), ("test",), "meta",
                       "fine_label_names", "fine_labels", "CIFAR100",
                       "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz")


def read_cifar10(data_cfg: "ImageDataConfig", split: str) -> ImageSet:
    return read_cifar(CIFAR10, data_cfg, split)


def read_cifar100(data_cfg: "ImageDataConfig", split: str) -> ImageSet:
    return read_cifar(CIFAR100, data_cfg, split)


def read_cifar(layout: CifarLayout, data_cfg: "ImageDataConfig", split: str) -> ImageSet:
    root = Path(data_cfg.root)
    folder = root / layout.folder
    batch_names = layout.train_files if split == "train" else layout.test_files
    paths = [folder / n for n in batch_names] + [folder / layout.meta_file]

    def download() -> None:
        import torchvision.datasets
        getattr(torchvision.datasets, layout.torchvision_class)(str(root), train=split == "train", download=True)

    ensure_files(root, paths, layout.name, download if data_cfg.download else None, layout.origin)

    datas, labels = [], []
    for path in paths[:-1]:
        batch = _unpickle(path, layout.name)
        try:
            datas.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3 * 32 * 32))
            labels.append(np.asarray(batch[layout.labels_key], dtype=np.int64))
        except (KeyError, ValueError) as e:
            raise DatasetError(f"{layout.name}: {path}: not a CIFAR batch ({type(e).__name__}: {e})") from None
        if len(datas[-1]) != len(labels[-1]):
            raise DatasetError(f"{layout.name}: {path}: {len(datas[-1])} images but {len(labels[-1])} labels")
    meta = _unpickle(paths[-1], layout.name)
    if layout.names_key not in meta:
        raise DatasetError(f"{layout.name}: {paths[-1]}: no {layout.names_key!r} in the meta file")
    class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[layout.names_key]]

    # Rows are 1024 red, 1024 green, 1024 blue values, each plane row-major: CHW.
    images = np.concatenate(datas).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    label_array = np.concatenate(labels)
    if len(label_array) and (label_array.min() < 0 or label_array.max() >= len(class_names)):
        raise DatasetError(f"{layout.name}: labels outside 0..{len(class_names) - 1} in {folder}")
    return ImageSet(layout.name, split, label_array, len(class_names), (32, 32),
                    images=np.ascontiguousarray(images), class_names=class_names)


# The only names a CIFAR batch refers to: numpy arrays (rebuilt by ndarray's own __reduce__ function,
# under numpy 1's and numpy 2's module names), their dtypes and numpy scalars; and `_codecs.encode`,
# which protocol-2 pickles written by Python 3 use for bytes. Dicts, lists, str, bytes and numbers
# need no name at all.
_ARRAY = np.zeros(0, np.uint8).__reduce__()[0]
_SCALAR = np.int64(0).__reduce__()[0]
ALLOWED = {
    **{(module, "_reconstruct"): _ARRAY for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): _SCALAR for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class RefusedName(pickle.UnpicklingError):
    """The pickle names something a CIFAR batch never holds."""


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise RefusedName(f"{module}.{name}") from None


def _unpickle(path: Path, dataset: str) -> dict:
    """The batch dict with str keys.

    The official batches are Python 2 pickles: read with latin1 (as torchvision
    does) their keys are str; pickles written from Python 3 may have bytes keys.
    """
    try:
        with open(path, "rb") as f:
            entry = _BatchUnpickler(f, encoding="latin1").load()
    except RefusedName as e:
        raise DatasetError(f"{dataset}: {path}: refused to unpickle: it names {e}, which no CIFAR batch holds "
                           f"(only arrays, lists, dicts, strings and numbers); replace it with the official file"
                           ) from None
    except Exception as e:  # truncated or not a pickle at all
        raise DatasetError(f"{dataset}: {path}: cannot unpickle ({type(e).__name__}: {e})") from None
    if not isinstance(entry, dict):
        raise DatasetError(f"{dataset}: {path}: expected a pickled dict, got {type(entry).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
