"""The embedded demo's two stand-in sources: committed exports, reproducible by one command.

    python -m tools.demo_sources            (make demo-sources: retrain both, verify the committed copies)
    python -m tools.demo_sources --check    (make train / make demo: the committed copies are current)

Each source is an ordinary scratch run of the engine (configs/demo/source_*.yaml) on
a large labeling of the procedural set that differs from the target's. Pretraining
them costs more than a first `make train` may take on 2 CPU cores, so their exports
are committed under configs/demo/sources/ (<name>.pt, a few hundred KB) beside a
manifest (<name>.json) holding the identity they were trained from (a hash of the
source config's settings, not its comments, the overrides and the procedural generator's version), the file's
sha256 and its measured held-out accuracy. The demo configs load the .pt files
through the same `checkpoint` source loader as any other weights.

`--check` fails in one line when a committed export is missing, altered, or belongs
to another version of its config. Without it, each source is retrained (an
interrupted pretraining resumes; a finished one is reused) and compared with the
committed export: same identity -> held-out accuracy must agree within TOLERANCE
points (bitwise equality is reported; it holds on the same CPU and thread count);
no export yet or another identity -> the retrained network is exported, to be
committed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import yaml

from engine.schema import ConfigError
from pipelines.datasets import procedural
from foundation.files import copy_atomic, file_sha256, write_atomic

# `make train` runs --check before every training, so the check imports only what hashing needs; retraining
# and evaluating import torch and the engine where they need them (importing those costs ~6 s on 2 cores).

SOURCES = {"object": "configs/demo/source_object.yaml", "scene": "configs/demo/source_scene.yaml"}
COMMITTED = Path("configs/demo/sources")
TOLERANCE = 2.0  # points of held-out top-1 a retrained source may differ from the committed one


def identity(config: str, overrides: list[str]) -> str:
    """What a source was trained from: its config's settings (a comment edit keeps it), the overrides and
    the procedural generator's version."""
    settings = {"config": yaml.safe_load(Path(config).read_text()), "overrides": list(overrides),
                "procedural": procedural.VERSION}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def manifest_path(name: str, where: Path = COMMITTED) -> Path:
    return where / f"{name}.json"


def check_committed_sources(where: Path = COMMITTED, overrides: list[str] = ()) -> dict[str, Path]:
    """The committed export of each source, after checking it is there, intact and current."""
    paths = {}
    for name, config in SOURCES.items():
        weights, manifest = where / f"{name}.pt", manifest_path(name, where)
        fix = "run `make demo-sources` to retrain and export it"
        if not weights.exists() or not manifest.exists():
            raise ConfigError(f"{weights}: the demo's {name}-like source is missing; {fix}")
        recorded = json.loads(manifest.read_text())
        wanted = identity(config, list(overrides))
        if recorded.get("identity") != wanted:
            raise ConfigError(f"{weights}: exported from another version of {config} (identity "
                              f"{recorded.get('identity')}, now {wanted}); {fix}")
        if recorded.get("sha256") != file_sha256(weights):
            raise ConfigError(f"{weights}: its sha256 differs from the one in {manifest}; {fix}")
        paths[name] = weights
    return paths


def pretrain(name: str, overrides: list[str]) -> Path:
    """Train (or resume, or reuse) the source's run; its deployed final checkpoint."""
    from engine.config import load_config
    from engine.trainer import train
    config = SOURCES[name]
    cfg = load_config(config, [*overrides, f"run.name=demo/source_{name}-{identity(config, list(overrides))}"])
    print(f"pretraining the demo's {name}-like source ({config}) in {cfg.run_dir()}")
    train(cfg)
    return cfg.run_dir() / "checkpoints" / "final.pt"


def held_out_accuracy(name: str, weights: Path, overrides: list[str] = ()) -> dict[str, float]:
    """Top-1 % of the source on the held-out split of its own labeling (the target's test images),
    and, for labelings that contain the shape, how often its own classes name the right shape."""
    import numpy as np
    import torch
    from engine.config import SourceConfig, load_config
    from models.sources import load_source
    from pipelines.datasets import build_split
    cfg = load_config(SOURCES[name], list(overrides))
    test = build_split(cfg.data, "test")
    source = load_source(SourceConfig(name=name, format="checkpoint", arch=cfg.model.target, weights=str(weights),
                                      resize={"scale": 1.0}, mean=cfg.data.mean, std=cfg.data.std))
    images = torch.from_numpy(test.images).permute(0, 3, 1, 2)
    predicted = np.concatenate([source(chunk.float() / 255).argmax(1).numpy() for chunk in images.split(500)])
    result = {"top1": 100.0 * float((predicted == test.labels).mean())}
    per_shape = procedural.CLASSES_PER_SHAPE.get(cfg.data.procedural.get("label"))
    if per_shape:
        result["shape_top1"] = 100.0 * float((predicted // per_shape == test.labels // per_shape).mean())
    return result


def export(name: str, trained: Path, overrides: list[str], where: Path = COMMITTED) -> dict:
    accuracy = held_out_accuracy(name, trained, overrides)
    manifest = {"config": SOURCES[name], "overrides": list(overrides),
                "identity": identity(SOURCES[name], list(overrides)), "procedural_version": procedural.VERSION,
                "sha256": file_sha256(trained), "held_out": {k: round(v, 2) for k, v in accuracy.items()}}
    copy_atomic(trained, where / f"{name}.pt")
    write_atomic(manifest_path(name, where), json.dumps(manifest, indent=2) + "\n")
    return manifest


def verify(name: str, trained: Path, overrides: list[str], where: Path = COMMITTED) -> bool:
    """The retrained source against the committed export of the same identity."""
    recorded = json.loads(manifest_path(name, where).read_text())
    retrained = held_out_accuracy(name, trained, overrides)
    committed = held_out_accuracy(name, where / f"{name}.pt", overrides)
    same_bits = file_sha256(trained) == recorded["sha256"]
    ok = all(abs(retrained[k] - committed[k]) <= TOLERANCE for k in committed)
    print(f"demo source {name}: committed {fmt(committed)} | retrained {fmt(retrained)} | "
          f"{'identical weights' if same_bits else 'weights differ bitwise'} -> "
          f"{'verified' if ok else f'MISMATCH (more than {TOLERANCE} points)'}")
    return ok


def fmt(accuracy: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}%" for k, v in accuracy.items())


def reproduce(overrides: list[str], where: Path = COMMITTED) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    ok = True
    for name, config in SOURCES.items():
        trained = pretrain(name, overrides)
        manifest = manifest_path(name, where)
        wanted = identity(config, overrides)
        if manifest.exists() and json.loads(manifest.read_text()).get("identity") == wanted:
            ok &= verify(name, trained, overrides, where)
        else:
            recorded = export(name, trained, overrides, where)
            print(f"demo source {name}: exported {where / (name + '.pt')} ({fmt(recorded['held_out'])}); "
                  f"commit {where}/")
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the committed exports are current")
    parser.add_argument("--where", type=Path, default=COMMITTED)
    parser.add_argument("overrides", nargs="*", help="applied to both source configs (part of their identity)")
    args = parser.parse_args(argv)
    if args.check:
        try:
            check_committed_sources(args.where, args.overrides)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    from engine.entry import run_entry
    verified = []
    status = run_entry(lambda: verified.append(reproduce(args.overrides, args.where)))
    return status or (0 if all(verified) else 1)


if __name__ == "__main__":
    sys.exit(main())
