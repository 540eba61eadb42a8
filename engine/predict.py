"""The top classes of image files, by name, from a deployed checkpoint:

    python -m engine.predict --checkpoint runs/demo/sskt/seed0/checkpoints/final.pt cat.png dog.jpg [--top 5]

The checkpoint carries what it needs (architecture, class names, input size, mean and std);
each image is resized to the checkpoint's input size. One line per image:
`cat.png: cat 0.91, dog 0.05, ...` (softmax probabilities; per-class sigmoids for multi-label models).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from engine.config import ConfigError
from engine.evaluate import load_deployed
from engine.train import exit_status


def read_image(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """float [3, H, W] in [0, 1] at `size`, resized as the data sets resize files (PIL bilinear)."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            pixels = np.array(img, dtype=np.uint8)
    except FileNotFoundError:
        raise ConfigError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ConfigError(f"{path}: not an image PIL can read ({e})") from None
    return torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0


def predict(checkpoint_path: Path, images: list[Path], top: int = 5) -> list[list[tuple[str, float]]]:
    if not checkpoint_path.exists():
        raise ConfigError(f"{checkpoint_path}: checkpoint not found")
    network, meta = load_deployed(checkpoint_path)
    names = meta.get("class_names") or [str(i) for i in range(network.num_classes)]
    size = tuple(meta.get("input_size") or (224, 224))
    batch = torch.stack([read_image(p, size) for p in images])
    logits = network(batch)
    scores = torch.sigmoid(logits) if meta.get("multilabel") else torch.softmax(logits, dim=1)
    values, indices = scores.topk(min(top, scores.shape[1]), dim=1)
    results = [[(names[i], float(v)) for v, i in zip(vs.tolist(), idx.tolist())] for vs, idx in zip(values, indices)]
    for path, result in zip(images, results):
        print(f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in result))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path, help="a deployed checkpoint (checkpoints/final.pt)")
    parser.add_argument("images", nargs="+", type=Path, help="image files (PNG, JPEG, ...)")
    parser.add_argument("--top", type=int, default=5, help="how many classes to print per image")
    args = parser.parse_args(argv)
    return exit_status(predict, args.checkpoint, args.images, args.top)


if __name__ == "__main__":
    sys.exit(main())
