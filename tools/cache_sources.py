"""Build the frozen-source output caches of an experiment ahead of training.

    python -m tools.cache_sources --config configs/cifar10/resnet20_sskt_PI.yaml [key=value ...]
    accelerate launch --num_processes 4 -m tools.cache_sources --config ...   (sharded over 4 GPUs)
    python -m tools.cache_sources --config ... --check                          (validate only)

Caches the training split of every source whose `cache` is not `off`, through the same
code as the start of training (engine.source_outputs.image_cache.open_cached_source): a valid cache is
kept, a missing, stale or damaged one is built, `cache: rebuild` rebuilds. A source marked
`cache: required` is built here, since that mode exists for runs that must not build.
Exit status 2 and one line when a config, data, weight or cache file is at fault.
"""
from __future__ import annotations

import argparse
import sys

import torch
from accelerate import Accelerator

from engine.config import load_config
from engine.source_outputs.image_cache import human_bytes, open_cached_source
from engine.source_outputs import source_configs
from engine.train import exit_status
from models.sources import load_sources
from pipelines.datasets import build_split, is_video
from pipelines.views import ViewSet


def cache_sources(config: str, overrides: list[str], check: bool = False) -> None:
    cfg = load_config(config, overrides)
    cached = [s for s in cfg.sources if s.cache != "off"]
    if not cached:
        print(f"{config}: no source has a cache (all are cache: off); nothing to do")
        return
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    train_set = build_split(cfg.data, "train")
    sources = {s.name: s for s in load_sources(source_configs(cfg))}
    for source_cfg in cached:
        mode = "required" if check else ("rebuild" if source_cfg.cache == "rebuild" else "auto")
        source = sources[source_cfg.name]
        if is_video(train_set):  # per-frame outputs in every clip view (engine.source_outputs.frame_cache)
            from engine.source_outputs.frame_cache import open_frame_cache
            from engine.video import clip_view_sets
            provider = open_frame_cache(source, train_set, clip_view_sets(cfg)[0], cfg.data.clip_length,
                                        cfg.source_cache, mode, accelerator, progress=cfg.train.progress)
        else:
            provider = open_cached_source(source, train_set, ViewSet(pad=cfg.data.pad, count=cfg.data.views),
                                          cfg.source_cache, mode, accelerator, progress=cfg.train.progress)
        if accelerator.is_main_process:
            print(f"{source_cfg.name}: {provider.path} ({human_bytes(provider.nbytes)}, "
                  f"{'in memory' if provider.in_memory else 'read through HDF5'} at training time "
                  f"with source_cache.memory_gb={cfg.source_cache.memory_gb})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="experiment YAML (configs/...)")
    parser.add_argument("--check", action="store_true", help="only validate: exit 2 if a cache is missing or bad")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. source_cache.batch_size=512")
    args = parser.parse_args(argv)
    return exit_status(cache_sources, args.config, args.overrides, args.check)


if __name__ == "__main__":
    sys.exit(main())
