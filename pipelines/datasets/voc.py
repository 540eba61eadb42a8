"""Pascal VOC 2007 as multi-label classification (train = trainval, test = test).

Labels are multi-hot over the 20 classes, from the objects in each XML annotation;
objects marked difficult are left out, as in the standard classification protocol.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipelines.datasets import DatasetError, ensure_files
from pipelines.datasets.base import ImageSet

if TYPE_CHECKING:
    from pipelines.datasets.schema import ImageDataConfig

CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
           "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
           "tvmonitor"]
CLASS_INDEX = {name: i for i, name in enumerate(CLASSES)}
DEFAULT_SIZE = 224
IMAGE_SETS = {"train": "trainval", "test": "test"}
ORIGIN = "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/ (VOCtrainval_06-Nov-2007.tar, VOCtest_06-Nov-2007.tar)"


def read_voc2007(data_cfg: "ImageDataConfig", split: str) -> ImageSet:
    root = Path(data_cfg.root)
    base = root / "VOCdevkit" / "VOC2007"
    image_set = IMAGE_SETS[split]
    list_path = base / "ImageSets" / "Main" / f"{image_set}.txt"

    def download() -> None:
        import torchvision.datasets
        torchvision.datasets.VOCDetection(str(root), year="2007", image_set=image_set, download=True)

    ensure_files(root, [base / "JPEGImages", base / "Annotations", list_path], "voc2007",
                 download if data_cfg.download else None, ORIGIN)

    ids = [line.strip() for line in list_path.read_text().splitlines() if line.strip()]
    files, labels = [], np.zeros((len(ids), len(CLASSES)), dtype=np.float32)
    for i, image_id in enumerate(ids):
        jpeg = base / "JPEGImages" / f"{image_id}.jpg"
        if not jpeg.exists():
            raise DatasetError(f"voc2007: {jpeg} not found (listed in {list_path})")
        files.append(str(jpeg))
        for name in object_classes(base / "Annotations" / f"{image_id}.xml"):
            labels[i, CLASS_INDEX[name]] = 1.0

    size = data_cfg.image_size or DEFAULT_SIZE
    return ImageSet("voc2007", split, labels, len(CLASSES), (size, size), files=files, class_names=list(CLASSES))


def object_classes(xml_path: Path) -> list[str]:
    """Class names of the non-difficult objects in one annotation file."""
    if not xml_path.exists():
        raise DatasetError(f"voc2007: {xml_path} not found")
    try:
        tree = ET.parse(xml_path)
    except ET.ParseError as e:
        raise DatasetError(f"voc2007: {xml_path}: malformed XML ({e})") from None
    names = []
    for obj in tree.getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in CLASS_INDEX:
            raise DatasetError(f"voc2007: {xml_path}: unknown object class {name!r}")
        if (obj.findtext("difficult") or "0").strip() == "1":
            continue
        names.append(name)
    return names
