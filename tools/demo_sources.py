"""Pretrain the embedded demo's two stand-in sources once, then reuse them.

    python -m tools.demo_sources        (make demo-sources)

Each source is an ordinary scratch run of the engine (configs/demo/source_*.yaml)
on a large labeling of the procedural set that differs from the target's; its
deployed checkpoint is exported to data/demo/sources/<name>.pt, where the demo
configs load it through the same `checkpoint` source loader as any other file.
An export is reused only while its identity (the source config, the overrides and
the procedural generator's version) is unchanged, else it is trained anew; an
interrupted pretraining resumes.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from engine.config import load_config
from engine.train import train
from pipelines.datasets import procedural
from pipelines.storage import copy_atomic, write_atomic

SOURCES = {"object": "configs/demo/source_object.yaml", "scene": "configs/demo/source_scene.yaml"}


def export_path(out_dir: Path, name: str) -> Path:
    return out_dir / f"{name}.pt"


def identity(config: str, overrides: list[str]) -> str:
    text = Path(config).read_text() + "\n".join(overrides) + f"\nprocedural v{procedural.VERSION}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def ensure_demo_sources(out_dir: Path = Path("data/demo/sources"), overrides: list[str] = ()) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, config in SOURCES.items():
        path, stamp = export_path(out_dir, name), out_dir / f"{name}.identity"
        wanted = identity(config, list(overrides))
        if not path.exists() or not stamp.exists() or stamp.read_text() != wanted:
            print(f"pretraining the demo's {name}-like source ({config}), once")
            cfg = load_config(config, [*overrides, f"run.name=demo/source_{name}-{wanted}"])
            train(cfg)
            copy_atomic(cfg.run_dir() / "checkpoints" / "final.pt", path)
            write_atomic(stamp, wanted)
        paths[name] = path
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/demo/sources"))
    parser.add_argument("overrides", nargs="*", help="applied to both source configs, e.g. train.epochs=1")
    args = parser.parse_args(argv)
    for name, path in ensure_demo_sources(args.out, args.overrides).items():
        print(f"demo source {name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
