"""The paper's 3D sources compute targets close to the SSKT reference's train-mode sources (tools.source_fidelity
measures how close on ResNet-50s; here the same comparison on ResNet-18s of the same layout, through what training
runs: resolve_sources, load_source, LiveSource), `input: reference` computes the reference's train mode and is
never cached, and the input policy is part of the cache key."""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from engine.config import ConfigError, load_config
from engine.experiment import resolve_sources
from engine.source_outputs import LiveSource, middle_frame
from models.sources import load_source
from tools.source_fidelity import (CANDIDATES, PAPER_CONFIG, clip_frames, compare, natural_frames,
                                   reference_outputs, standin_source, write_weights)

PAPER_3D = sorted(p for p in Path("configs").glob("*/resnet3d_*.yaml") if load_config(p).sources)
ARCH = "resnet18"  # the ResNet-50s' structure (bias-free convolutions, BatchNorm) at a test's cost
FRAMES = 32


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """Stand-in P and I sources in their shipped formats (CSAIL Places365 checkpoint, torchvision state_dict)."""
    folder, generator = tmp_path_factory.mktemp("weights"), torch.Generator().manual_seed(0)
    photos = natural_frames(24, 224, generator)
    cfg = load_config(PAPER_CONFIG)
    return {s.name: write_weights(standin_source(365 if s.format == "places365" else 1000, i, photos, ARCH),
                                  s.format, folder / f"{s.name}.pth")
            for i, s in enumerate(cfg.sources)}


@pytest.fixture(scope="module")
def clips() -> torch.Tensor:
    """uint8 [B, 3, 16, 112, 112] clips whose middle frames are natural-looking frames."""
    frames = clip_frames(FRAMES, torch.Generator().manual_seed(1))
    return frames.unsqueeze(2).repeat(1, 1, 16, 1, 1)


def paper_config(weights, overrides=()):
    """The paper's P+I config on the stand-in weight files, `overrides` applied to every source."""
    names = [s.name for s in load_config(PAPER_CONFIG).sources]
    return load_config(PAPER_CONFIG, [f"sources.{i}.{o}" for i, name in enumerate(names)
                                      for o in (f"weights={weights[name]}", f"arch={ARCH}", *overrides)])


def training_targets(weights, clips, overrides=()) -> dict[str, torch.Tensor]:
    """What training feeds the auxiliary losses: the config's sources resolved, loaded from the weight files and
    run by LiveSource on the clips' middle frames."""
    sources = [load_source(s, i) for i, s in enumerate(resolve_sources(paper_config(weights, overrides)))]
    return {s.name: LiveSource(s, contextlib.nullcontext, inputs=middle_frame)({"image": clips}) for s in sources}


def reference_targets(weights, clips) -> dict[str, torch.Tensor]:
    """The SSKT reference's: train-mode sources on 0-255 middle frames minus the ActivityNet mean, per GPU batch."""
    cfg = paper_config(weights)
    return {s.name: reference_outputs(load_source(s, i), middle_frame(clips), cfg.data.mean, batch=FRAMES)
            for i, s in enumerate(resolve_sources(cfg))}


def test_paper_3d_targets_are_close_to_the_reference(weights, clips):
    """Bounds from tools.source_fidelity (ResNet-50s, medians over seeds): input: frame stays within KL 0.1 of the
    reference with >= 80% top-1 agreement and no loss of entropy; eval mode on 0-255 frames gives KL in the
    thousands and one-hot targets. Every paper 3D config resolves its sources as the one measured here."""
    reference, targets = reference_targets(weights, clips), training_targets(weights, clips)
    for name, logits in targets.items():
        m = compare(reference[name], logits)
        assert m["kl"] < 0.1 and m["top1_agreement"] >= 0.8, (name, m)
        assert m["entropy"] > 0.7 * m["reference_entropy"] > 0.5, (name, m)  # not degenerate
    paper = [[s.model_dump() for s in resolve_sources(load_config(p))] for p in PAPER_3D]
    shipped = [s.model_dump() for s in resolve_sources(load_config(PAPER_CONFIG))]
    for path, sources in zip(PAPER_3D, paper):
        assert all({k: v for k, v in s.items() if k not in ("name", "format", "weights")}
                   == {k: v for k, v in shipped[0].items() if k not in ("name", "format", "weights")}
                   for s in sources), path


def test_eval_mode_on_0_255_frames_is_caught(weights, clips):
    """What the paper configs computed before (eval mode, the reference's normalisation) fails the bounds above."""
    reference = reference_targets(weights, clips)
    targets = training_targets(weights, clips, CANDIDATES["eval 0-255"])
    for name, logits in targets.items():
        m = compare(reference[name], logits)
        assert m["kl"] > 1 and m["entropy"] < 0.1, (name, m)


def test_input_reference_computes_the_reference_train_mode(weights, clips):
    """input: reference (cache: off) is the reference's train-mode computation, batch statistics included, and
    leaves the source's running statistics as they were."""
    cfg = paper_config(weights, ["input=reference", "cache=off"])
    frames = middle_frame(clips)
    for i, resolved in enumerate(resolve_sources(cfg)):
        source = load_source(resolved, i)
        before = {k: v.clone() for k, v in source.state_dict().items()}
        expected = reference_outputs(source, frames, cfg.data.mean, batch=FRAMES)
        assert torch.allclose(source(frames), expected, rtol=1e-4, atol=1e-4)
        half = source(frames[: FRAMES // 2])  # other batch, other statistics: as in the reference
        assert not torch.allclose(half, expected[: FRAMES // 2], rtol=1e-3, atol=1e-3)
        assert all(torch.equal(before[k], v) for k, v in source.state_dict().items())
        assert not any(m.training for m in source.modules())


def test_input_reference_with_a_cache_is_refused():
    with pytest.raises(ConfigError) as err:
        load_config(PAPER_CONFIG, ["sources.0.input=reference"])
    msg = str(err.value)
    assert "\n" not in msg and "sources.0" in msg and "input: reference" in msg
    assert "cache: off" in msg and "input: frame" in msg
    load_config(PAPER_CONFIG, ["sources.0.input=reference", "sources.0.cache=off"])  # live: fine


def test_cache_key_changes_with_the_input_policy(weights):
    """A cache built under one policy is never reused for another, even where the numbers would coincide
    (own at scale 1 with the ImageNet mean/std computes what frame computes)."""
    policies = {name: overrides for name, overrides in CANDIDATES.items()}
    policies["own, frame's numbers"] = ["input=own", "resize={scale: 1}"]
    prints = {}
    for name, overrides in policies.items():
        cfg = load_config(PAPER_CONFIG, [f"sources.0.{o}" for o in (f"weights={weights['places365']}",
                                                                     f"arch={ARCH}", *overrides)])
        prints[name] = load_source(resolve_sources(cfg)[0], 0).fingerprint()
    assert len(set(prints.values())) == len(prints), prints
