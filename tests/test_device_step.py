"""No host in the training step: the loop, the methods' steps, the resident loader and the source-cache lookups
never read a tensor's value back per step (on a GPU each read waits for every queued kernel); only the
progress line, when it is shown, and the epoch's record do."""
from __future__ import annotations

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState

from engine import progress
from engine.config import load_config
from engine.experiment import Experiment
from engine.loop import train_one_epoch
from tools.bench_timing import FirstBatches as Cut

READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def count_reads(monkeypatch) -> list[str]:
    """Every Python-level read of a tensor's value from now on (the CPU stand-in for a device sync)."""
    reads = []
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    return reads


def test_the_step_reads_nothing_back_unless_the_progress_line_is_shown(tiny_config, monkeypatch):
    # SSKT with its source's outputs from the cache held in memory: loader, lookup, step, loop
    cfg = load_config(tiny_config, ["data.batch_size=8", "data.views=2", "sources.0.cache=auto"])
    experiment = Experiment(cfg, splits=("train",))
    method, outputs, loader = experiment.method, experiment.source_outputs, experiment.train_loader
    assert len(loader) >= 6
    train_one_epoch(experiment.accelerator, method, outputs, Cut(loader, 1), 0, 3, False)  # first-use work
    per_epoch = {}
    for steps in (2, 6):
        reads = count_reads(monkeypatch)
        record = train_one_epoch(experiment.accelerator, method, outputs, Cut(loader, steps), 1, 3, False)
        monkeypatch.undo()
        assert record["train/images"] == 8 * steps
        per_epoch[steps] = len(reads)
    assert per_epoch[6] == per_epoch[2]  # the epoch's record only: nothing per step
    monkeypatch.setattr("engine.loop.Progress", EveryStep)  # a progress line at every step: its figures are read
    reads = count_reads(monkeypatch)
    train_one_epoch(experiment.accelerator, method, outputs, Cut(loader, 6), 2, 3, True)
    assert len(reads) >= per_epoch[6] + 6


class EveryStep(progress.Progress):
    def __init__(self, total: int, desc: str, enabled: bool):
        super().__init__(total, desc, enabled=enabled, terminal=False)

    def update(self, n: int = 1) -> bool:
        super().update(n)
        return True
