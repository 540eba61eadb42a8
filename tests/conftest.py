"""Shared fixtures: tiny experiments on the procedural set, with a source checkpoint written here."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.checkpoint import save_deployed
from models.registry import build_target

ROOT = Path(__file__).resolve().parents[1]

TINY = """
seed: 0
data:
  dataset: procedural
  root: {data}
  procedural: {{label: shape, train_size: 96, test_size: 50}}
  loader: resident
  batch_size: 32
  eval_batch_size: 32
model: {{target: resnet8, head: transfer_module}}
sources:
  - {{name: object, format: checkpoint, arch: resnet8, weights: {weights}, resize: {{scale: 1.5}}, cache: off}}
method: {{name: sskt, alpha: 0.5}}
optim: {{lr: 0.05, schedule: multistep, milestones: [1]}}
train: {{epochs: 2, progress: false}}
source_cache: {{root: {cache}}}
run: {{root: {runs}}}
"""


@pytest.fixture(scope="session")
def source_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised resnet8 with 36 classes, saved as the engine saves deployed targets."""
    path = tmp_path_factory.mktemp("sources") / "object.pt"
    torch.manual_seed(123)
    save_deployed(build_target("resnet8", 36).state_dict(), "resnet8", 36, path)
    return path


@pytest.fixture
def tiny_config(tmp_path, source_checkpoint) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(data=tmp_path.parent / "shared-data", weights=source_checkpoint, runs=tmp_path / "runs",
                               cache=tmp_path / "source_cache"))
    return path


def train_killed_after_epoch(cfg, monkeypatch, epoch: int = 1) -> None:
    """Train `cfg` and die (KeyboardInterrupt) right after epoch `epoch`'s checkpoint, as a killed job
    would; the checkpoint writer is restored and the Accelerate state reset, ready for the resume."""
    from accelerate.state import AcceleratorState, GradientState
    from engine import checkpoint
    from engine.trainer import train
    real_save = checkpoint.save_training_state

    def save_then_die(accelerator, folder, state, schedules=None):
        real_save(accelerator, folder, state, schedules)
        if state["epoch"] == epoch:
            raise KeyboardInterrupt
    monkeypatch.setattr(checkpoint, "save_training_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.setattr(checkpoint, "save_training_state", real_save)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
