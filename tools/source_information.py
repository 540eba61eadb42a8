"""What a config's frozen sources tell its target, and how low the auxiliary loss could go.

    python -m tools.source_information --config configs/demo/video_sskt.yaml [--epochs 4] [--out F.json] [key=value ...]

Runs the training loader for a few epochs (its views, clips and middle frames, as training draws them) and
each source live on every batch, then scores the source's softmax at the method's temperature against
predictors that know more or less about each sample: the soft cross-entropy (nats) a head would reach if it
predicted, for every sample, the mean source output over all samples (`nothing`), over the samples of its
class (`class`), or over its own draws (`sample`: the same image's views, the same video's clips; with few
epochs it flatters, as each mean is taken over few draws). The source's own entropy is the floor. A trained
SSKT head's `train/aux/<source>` near `class` means the target learned little of the source beyond what its
labels already say.

On the procedural video demo (a config with `data.procedural`) three more predictors use the generator's
factors: the video's true shape kind (`shape`), its shape with the size third at the source's frame
(`shape x size`, what the object-like source was trained to name) and its shape with its colour
(`shape x colour`, the fine-grained source's classes); for a source in one of those label spaces it also
says how often its top-1 names the true shape and the true kind (percent of draws).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

from engine.config import ConfigError, load_config
from engine.entry import run_entry
from engine.experiment import Experiment
from engine.source_outputs import live_source_outputs
from foundation.files import write_atomic
from pipelines.datasets import is_video
from pipelines.datasets import procedural_video
from pipelines.datasets.procedural import COLOURS, SHAPES, SIZES, pick

# The demo sources' label spaces that name the shape, by their class count: the kind each names.
KINDS = {len(SHAPES) * len(SIZES): "shape x size", len(SHAPES) * len(COLOURS): "shape x colour"}


def draw_outputs(experiment: Experiment, epochs: int) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """Each source's logits on `epochs` epochs of training batches, and the batches' keys."""
    sources = live_source_outputs(experiment.sources, experiment.accelerator, is_video(experiment.train_set))
    outputs, keys = defaultdict(list), defaultdict(list)
    for epoch in range(epochs):
        for batch in experiment.train_loader.epoch(epoch):
            for name, logits in sources(batch).items():
                outputs[name].append(logits.cpu())
            for key in ("label", "index", "start"):
                if key in batch:
                    keys[key].append(batch[key].cpu())
    return ({name: torch.cat(chunks) for name, chunks in outputs.items()},
            {key: torch.cat(chunks).numpy() for key, chunks in keys.items()})


def cross_entropy_to_group_means(probs: torch.Tensor, groups: np.ndarray) -> float:
    """Soft CE of each sample's distribution to the mean distribution of its group."""
    codes = torch.as_tensor(np.unique(groups, return_inverse=True)[1].reshape(-1))
    means = torch.zeros(int(codes.max()) + 1, probs.shape[1]).index_add_(0, codes, probs)
    means /= torch.bincount(codes).unsqueeze(1)
    return float(-(probs * means[codes].clamp_min(1e-12).log()).sum(1).mean())


def procedural_factors(experiment: Experiment, keys: dict) -> dict[str, np.ndarray]:
    """The video demo generator's shape kind, (shape, size third at the source's frame) and (shape, colour) of
    every draw."""
    options = procedural_video.options(**experiment.cfg.data.procedural)
    videos = experiment.train_set
    names = [videos.store.table.names[videos.rows[i]] for i in keys["index"]]
    middle = keys["start"] + experiment.cfg.data.clip_length // 2
    shape, size, colour = [], [], []
    for name, frame in zip(names, middle):
        label, group, clip = procedural_video.parse_name(name)
        factors = procedural_video.video_factors(options["seed"], label, group, clip, options["frames"],
                                                 **{key: options[key] for key in procedural_video.DESIGN})[0]
        shape.append(factors["shape"])
        colour.append(factors["colour"])
        size.append(int(pick(factors["radius"][frame], len(SIZES))))  # as the 2D set's labels
    shape = np.array(shape)
    return {"shape": shape, "shape x size": shape * len(SIZES) + np.array(size),
            "shape x colour": shape * len(COLOURS) + np.array(colour)}


def information(experiment: Experiment, epochs: int) -> dict[str, dict[str, float]]:
    temperature = getattr(experiment.cfg.method, "temperature", 1.0)
    outputs, keys = draw_outputs(experiment, epochs)
    groups = {"nothing": np.zeros(len(keys["index"]), dtype=np.int64), "sample": keys["index"]}
    if not experiment.train_set.multilabel:
        groups["class"] = keys["label"]
    if getattr(experiment.cfg.data, "procedural", None) and is_video(experiment.train_set):
        groups.update(procedural_factors(experiment, keys))
    report = {}
    for name, logits in outputs.items():
        probs = F.softmax(logits / temperature, dim=1)
        entropy = float(-(probs * probs.clamp_min(1e-12).log()).sum(1).mean())
        report[name] = {"draws": len(probs), "temperature": temperature, "entropy": entropy,
                        **{by: cross_entropy_to_group_means(probs, g) for by, g in groups.items()}}
        kind = KINDS.get(logits.shape[1])
        if kind in groups:
            named = logits.argmax(1).numpy()
            per_shape = logits.shape[1] // len(SHAPES)
            report[name]["top1"] = {"shape": 100 * float(np.mean(named // per_shape == groups["shape"])),
                                    kind: 100 * float(np.mean(named == groups[kind]))}
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--epochs", type=int, default=4, help="epochs of training draws (default 4)")
    parser.add_argument("--out", help="also write the figures as JSON")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    return run_entry(report_information, args.config, args.overrides, args.epochs, args.out)


def report_information(config: str, overrides: list[str], epochs: int, out: str | None) -> None:
    cfg = load_config(config, overrides)
    if not cfg.sources:
        raise ConfigError(f"{config}: no sources to score (the config's `sources` is empty)")
    report = information(Experiment(cfg, splits=("train",)), epochs)
    for name, row in report.items():
        print(f"source {name}: {row['draws']} draws, T={row['temperature']:g}; soft CE (nats) of a head that knows")
        for key, value in row.items():
            if key not in ("draws", "temperature", "top1"):
                print(f"  {'the source itself' if key == 'entropy' else key:20s} {value:.3f}")
        if "top1" in row:
            (kind, hits), = [(k, v) for k, v in row["top1"].items() if k != "shape"]
            print(f"  its top-1 names the true shape in {row['top1']['shape']:.1f}% of the draws, the true "
                  f"{kind} in {hits:.1f}%")
    if out:
        write_atomic(out, json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
