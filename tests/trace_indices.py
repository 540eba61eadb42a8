"""`engine.train` with every training step's sample indices recorded (for tests; run under torchrun).

    torchrun --nproc_per_node 2 tests/trace_indices.py OUT_DIR --config ... [key=value ...]

Writes OUT_DIR/rank<r>.json: {epoch: [sample indices the method trained on, in order]}.
"""
import json
import os
import sys
from pathlib import Path

from engine import experiment, trainer
from engine import train as train_module

out_dir, argv = Path(sys.argv[1]), sys.argv[2:]
seen: dict[int, list[int]] = {}
current = {"epoch": None}
real_epoch, real_build = trainer.train_one_epoch, experiment.build_method


def traced_epoch(accelerator, method, source_outputs, loader, epoch, *args, **kwargs):
    current["epoch"] = epoch
    return real_epoch(accelerator, method, source_outputs, loader, epoch, *args, **kwargs)


def traced_build(cfg):
    method = real_build(cfg)
    step = method.training_step

    def traced_step(batch, source_outputs):
        seen.setdefault(current["epoch"], []).extend(batch["index"].tolist())
        return step(batch, source_outputs)
    method.training_step = traced_step
    return method


trainer.train_one_epoch, experiment.build_method = traced_epoch, traced_build
status = train_module.main(argv)
out_dir.mkdir(parents=True, exist_ok=True)
(out_dir / f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(seen))
sys.exit(status)
