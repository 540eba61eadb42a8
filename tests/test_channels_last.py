"""train.channels_last: the same training in NHWC memory as in NCHW, resumable across layouts, 2D only."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from torch import nn

from engine.config import load_config
from engine.methods import Context, build_method
from engine.schema import ConfigError
from engine.trainer import train


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def records(cfg):
    return [json.loads(line) for line in (cfg.run_dir() / "metrics.jsonl").read_text().splitlines()]


def test_the_target_and_its_batches_go_channels_last(tiny_config):
    cfg = load_config(tiny_config)  # train.channels_last: auto
    method = build_method(cfg.method)
    method.build(Context(cfg, 6, False, [SimpleNamespace(name="object", num_classes=36)]))
    net = method.nets["target"]
    images = torch.rand(4, 3, 32, 32)
    before = net(images)
    method.set_memory_format(cfg.train.channels_last)
    convs = [m.weight for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert any(not w.is_contiguous() for w in convs)  # 3x3 kernels: no longer NCHW (1x1 ones are both)
    seen = []
    first_conv = next(m for m in net.target.modules() if isinstance(m, nn.Conv2d))
    first_conv.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    after = net(images)
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()
    assert torch.allclose(before.logits, after.logits, atol=1e-5)
    assert all(torch.allclose(before.aux[k], after.aux[k], atol=1e-5) for k in before.aux)


def test_one_epoch_in_channels_last_has_the_same_loss_and_resumes_in_the_other_layout(tiny_config):
    nchw = load_config(tiny_config, ["train.epochs=1", "train.channels_last=false", "run.name=nchw"])
    nhwc = load_config(tiny_config, ["train.epochs=1", "train.channels_last=true", "run.name=nhwc"])
    train(nchw)
    AcceleratorState._reset_state(reset_partial_state=True)
    train(nhwc)
    a, b = records(nchw)[0], records(nhwc)[0]
    assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-4)
    assert a["test/top1"] == pytest.approx(b["test/top1"], abs=2.0)  # at most one of 50 test images flips

    # The layout is not part of what a run computes: an NHWC run resumes in NCHW (its checkpoint loads).
    AcceleratorState._reset_state(reset_partial_state=True)
    resumed = load_config(tiny_config, ["train.epochs=2", "train.channels_last=false", "run.name=nhwc"])
    summary = train(resumed)
    assert summary["epochs"] == 2 and [r["epoch"] for r in records(resumed)] == [1, 2]


def test_a_3d_network_refuses_channels_last_true_and_keeps_its_layout_on_auto(tiny_config):
    cfg = load_config(tiny_config)
    method = build_method(cfg.method)
    method.nets = {"target": nn.Sequential(nn.Conv3d(3, 4, 3))}
    method.set_memory_format("auto")
    assert method.nets["target"][0].weight.is_contiguous()
    with pytest.raises(ConfigError, match="train.channels_last: true is for 2D targets; target is a 3D network"):
        method.set_memory_format(True)
