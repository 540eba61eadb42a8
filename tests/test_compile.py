"""train.compile: compiled networks compute what eager ones do, and save, export and resume alike.

One tiny network (a conv, a BatchNorm, a classifier) keeps TorchInductor's CPU compile to seconds.
"""
from __future__ import annotations

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from safetensors.torch import load_file
from torch import nn

from engine.config import load_config
from engine.experiment import Experiment, make_accelerator
from engine.methods.base import compile_mode
from engine.trainer import train
from models.registry import TARGETS, register_target
from models.targets.base import Target

TINY = "compile_tiny"


class TinyTarget(Target):
    def __init__(self, num_classes: int):
        super().__init__()
        self.stage_channels, self.transfer_module_width = [8], 8
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.classifier = nn.Linear(8, num_classes)

    def forward_stages(self, x):
        return [torch.relu(self.bn(self.conv(x)))]


@pytest.fixture(autouse=True)
def tiny_target():
    if TINY not in TARGETS:
        register_target(TINY)(TinyTarget)
    yield
    TARGETS._entries.pop(TINY, None)  # other tests list the registered targets
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def config(tiny_config, *overrides):
    return load_config(tiny_config, [f"model.target={TINY}", "sources=[]", "method={name: scratch}",
                                     "data.batch_size=16", "data.procedural.train_size=48", *overrides])


def fresh_experiment(cfg) -> Experiment:
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    torch.manual_seed(0)  # the same initial weights for both
    return Experiment(cfg, make_accelerator(cfg), splits=("train",))


def test_compile_mode_follows_the_device():
    one_cpu = type("A", (), {"device": torch.device("cpu"), "num_processes": 1})()
    one_gpu = type("A", (), {"device": torch.device("cuda", 0), "num_processes": 1})()
    two_gpus = type("A", (), {"device": torch.device("cuda", 0), "num_processes": 2})()
    assert compile_mode("auto", one_cpu) is None  # make train on a CPU never compiles
    assert compile_mode(True, one_cpu) == "default" and compile_mode(False, one_gpu) is None
    assert compile_mode("auto", one_gpu) == "reduce-overhead"  # CUDA graphs: every training batch is full
    assert compile_mode("auto", two_gpus) == "default"  # DDP's gradient hooks run between the kernels


def test_compiled_steps_equal_eager_steps(tiny_config):
    runs = {}
    for setting in (False, True):
        experiment = fresh_experiment(config(tiny_config, f"train.compile={str(setting).lower()}"))
        method, outputs = experiment.method, experiment.source_outputs
        net = method.nets["target"]
        assert (getattr(net, "_compiled_call_impl", None) is not None) == setting
        method.train()
        losses = [float(method.training_step(batch, outputs(batch)).loss) for batch in experiment.train_loader.epoch(0)]
        runs[setting] = losses, net.state_dict()
    (eager, eager_state), (compiled, compiled_state) = runs[False], runs[True]
    assert len(eager) == 3 and compiled == pytest.approx(eager, rel=1e-4, abs=1e-5)
    assert list(compiled_state) == list(eager_state)  # no _orig_mod. prefix
    for key, value in eager_state.items():
        torch.testing.assert_close(compiled_state[key], value, rtol=1e-3, atol=1e-4)


def test_a_run_switches_compile_on_resume_and_exports_the_eager_keys(tiny_config):
    def run(epochs: int, compiled: bool, root: str = "runs"):
        cfg = config(tiny_config, f"train.epochs={epochs}", f"train.compile={str(compiled).lower()}",
                     "optim.milestones=[10]", f"run.root={tiny_config.parent / root}")
        torch.manual_seed(0)
        train(cfg)
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        return cfg.run_dir()

    eager = run(3, False, "eager")
    run(1, False)
    run(2, True)  # resumes the eager run's state, compiled
    switched = run(3, False)  # resumes the compiled run's state, eager
    assert switched.name == "seed0" and [p.name for p in switched.parent.iterdir()] == ["seed0"]  # one run
    for stem in ("best", "final"):
        want = torch.load(eager / "checkpoints" / f"{stem}.pt", weights_only=True)["state_dict"]
        got = torch.load(switched / "checkpoints" / f"{stem}.pt", weights_only=True)["state_dict"]
        assert list(got) == list(want)
    for key, value in want.items():  # final.pt: the same weights as the eager run's
        torch.testing.assert_close(got[key], value, rtol=1e-3, atol=1e-4)
    saved = [key for path in (switched / "checkpoints" / "last").glob("*.safetensors") for key in load_file(path)]
    assert saved and not [key for key in saved if "_orig_mod" in key]
