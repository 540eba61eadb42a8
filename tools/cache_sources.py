"""Build the frozen-source output caches of an experiment ahead of training.

    python -m tools.cache_sources --config configs/cifar10/resnet20_sskt_PI.yaml [key=value ...]
    accelerate launch --num_processes 4 -m tools.cache_sources --config ...   (sharded over 4 GPUs)
    python -m tools.cache_sources --config ... --check                          (validate only)

Caches the training split of every source whose `cache` is not `off` (per view for images, per frame and
clip view for video), through the experiment builder training uses (engine.experiment), so the caches are
exactly the ones a run of that config reads: a valid cache is kept, a missing, stale or damaged one is built,
`cache: rebuild` rebuilds. A source marked `cache: required` is built here, since that mode exists for runs
that must not build. Exit status 2 and one line when a config, data, weight or cache file is at fault.
"""
from __future__ import annotations

import argparse
import sys

from engine.entry import run_entry


def cache_sources(config: str, overrides: list[str], check: bool = False) -> None:
    from engine.config import load_config
    from engine.experiment import Experiment
    from engine.source_outputs.image_cache import human_bytes

    cfg = load_config(config, overrides)
    if not any(s.cache != "off" for s in cfg.sources):
        print(f"{config}: no source has a cache (all are cache: off); nothing to do")
        return
    # --check only validates; otherwise `required` builds too (the mode exists for runs that must not build).
    modes = {s.name: "required" if check else ("rebuild" if s.cache == "rebuild" else "auto")
             for s in cfg.sources if s.cache != "off"}
    cfg = cfg.model_copy(update={"sources": [s.model_copy(update={"cache": modes.get(s.name, "off")})
                                             for s in cfg.sources if s.name in modes]})
    experiment = Experiment(cfg, splits=("train",))
    for name, provider in experiment.source_outputs.providers.items():
        if experiment.accelerator.is_main_process:
            print(f"{name}: {provider.path} ({human_bytes(provider.nbytes)}, "
                  f"{'in memory' if provider.in_memory else 'read through HDF5'} at training time "
                  f"with source_cache.memory_gb={cfg.source_cache.memory_gb})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="experiment YAML (configs/...)")
    parser.add_argument("--check", action="store_true", help="only validate: exit 2 if a cache is missing or bad")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. source_cache.batch_size=512")
    args = parser.parse_args(argv)
    return run_entry(cache_sources, args.config, args.overrides, args.check)


if __name__ == "__main__":
    sys.exit(main())
