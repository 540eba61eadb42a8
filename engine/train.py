"""Train one experiment:

    python -m engine.train --config configs/demo/sskt.yaml [key=value ...]
    torchrun --nproc_per_node 2 -m engine.train --config ...         (several processes on a CPU)
    accelerate launch --num_processes 4 -m engine.train --config ... (several GPUs: the same code)

Reads and validates the config, data and weight files before any work (bad input: exit status 2 and one
line per problem), then trains, evaluates after every epoch and writes everything under
runs/<config name>/seed<k>/ (engine.run_folder; a run with other settings there goes on in a fresh numbered
folder, engine.reruns). Ctrl-C or SIGTERM: one line, exit 130 / 143, and the same command resumes.
"""
from __future__ import annotations

import argparse
import sys

from engine.entry import run_entry


def train_from_args(config: str, overrides: list[str]) -> dict:
    # Imported here, under run_entry: a Ctrl-C while torch loads is one line too.
    from engine.config import load_config
    from engine.trainer import train

    return train(load_config(config, overrides))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="experiment YAML (configs/...)")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. train.epochs=2 sources.0.cache=off")
    args = parser.parse_args(argv)
    return run_entry(train_from_args, args.config, args.overrides)


if __name__ == "__main__":
    sys.exit(main())
