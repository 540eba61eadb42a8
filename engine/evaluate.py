"""Score a saved checkpoint on the test split with the run's metrics:

    python -m engine.evaluate --run runs/demo/sskt/seed0 [--which final|best|epoch_010]
    python -m engine.evaluate --checkpoint model.pt --config configs/... [key=value ...]

Prints the metrics (top-1/top-5, or mAP and sample AP for multi-label data; for video runs clip
and video accuracy and the validation clips' accuracy, engine.video) and writes them as
`eval_<checkpoint>.json` in the run folder (with --run) or beside the checkpoint. The test split is
scored by the very evaluator training uses. The checkpoint is read as a deployed network: it
carries its architecture, input size, mean and std.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

from engine.config import ConfigError, load_config
from engine.data import build_evaluator
from engine.train import exit_status, make_accelerator
from models.sources import FrozenSource, load_source
from pipelines.datasets import build_split
from foundation.files import write_atomic


def load_deployed(path: Path) -> tuple[FrozenSource, dict]:
    """A deployed checkpoint as a frozen network on images in [0, 1] (read as a `checkpoint` source: its
    arch, input size, mean and std come from the file), and the file's other fields (class names, ...)."""
    spec = SimpleNamespace(name=str(path), format="checkpoint", arch=None, weights=str(path), num_classes=None,
                           resize=None, mean=None, std=None)
    network = load_source(spec)
    meta = torch.load(path, map_location="cpu", weights_only=True)
    return network, {k: v for k, v in meta.items() if k != "state_dict"}


def evaluate_checkpoint(cfg, checkpoint_path: Path) -> dict[str, float]:
    """The test split scored as training scores it (engine.data.build_evaluator): the same figures."""
    accelerator = make_accelerator(cfg, checkpoint_path.parent)  # the run's precision
    network, _ = load_deployed(checkpoint_path)
    evaluate = build_evaluator(cfg, build_split(cfg.data, "test"), accelerator)
    return evaluate(network.to(accelerator.device), "test/")


def run_evaluation(args) -> dict:
    if args.run:
        run = Path(args.run)
        config_file, checkpoint_path = run / "config.yaml", run / "checkpoints" / f"{args.which}.pt"
        out_dir = run
    else:
        if not (args.checkpoint and args.config):
            raise ConfigError("give --run RUN_FOLDER, or both --checkpoint FILE and --config FILE")
        config_file, checkpoint_path = Path(args.config), Path(args.checkpoint)
        out_dir = checkpoint_path.parent
    if not checkpoint_path.exists():
        raise ConfigError(f"{checkpoint_path}: checkpoint not found")
    values = evaluate_checkpoint(load_config(config_file, args.overrides), checkpoint_path)
    print(f"{checkpoint_path}: " + "  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in values.items()))
    write_atomic(out_dir / f"eval_{checkpoint_path.stem}.json",
                 json.dumps({"checkpoint": str(checkpoint_path), "config": str(config_file), **values}, indent=2) + "\n")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a run folder, runs/<name>/seed<k>")
    parser.add_argument("--which", default="final", help="checkpoint of the run: final, best, epoch_XXX")
    parser.add_argument("--checkpoint", help="a deployed checkpoint (with --config)")
    parser.add_argument("--config", help="the experiment YAML whose test split and metrics to use")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value for the config (e.g. data.root=...)")
    args = parser.parse_args(argv)
    return exit_status(run_evaluation, args)


if __name__ == "__main__":
    sys.exit(main())
