"""Score a saved checkpoint on the test split with the run's metrics:

    python -m engine.evaluate --run runs/demo/sskt/seed0 [--which final|best|epoch_010]
    python -m engine.evaluate --checkpoint model.pt --config configs/... [key=value ...]

Prints the metrics (top-1/top-5, or mAP and sample AP for multi-label data; for video runs clip
and video accuracy and the validation clips' accuracy: engine.evaluation) and writes them as
`eval_<checkpoint>.json` in the run folder (with --run) or beside the checkpoint. The test split is
scored by the very evaluator training uses (the experiment builder's). The checkpoint is read as a
deployed network: it carries its architecture, input size, mean and std.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.entry import run_entry


def evaluate_checkpoint(cfg, checkpoint_path: Path) -> dict[str, float]:
    """The test split scored as training scores it: the same figures."""
    from engine.experiment import Experiment, make_accelerator
    from models.sources import load_deployed

    experiment = Experiment(cfg, make_accelerator(cfg, checkpoint_path.parent), splits=("test",), sources=False)
    network, _ = load_deployed(checkpoint_path)
    return experiment.evaluators["test"](network.to(experiment.accelerator.device), "test/")


def run_evaluation(args) -> dict:
    from engine.config import ConfigError, load_config
    from foundation.files import write_atomic

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
    return run_entry(run_evaluation, args)


if __name__ == "__main__":
    sys.exit(main())
