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


def reference_targets(weights, clips, batch: int = FRAMES) -> dict[str, torch.Tensor]:
    """The SSKT reference's: train-mode sources on 0-255 middle frames minus the ActivityNet mean, per GPU batch."""
    cfg = paper_config(weights)
    return {s.name: reference_outputs(load_source(s, i), middle_frame(clips), cfg.data.mean, batch=batch)
            for i, s in enumerate(resolve_sources(cfg))}


@pytest.fixture(scope="module")
def reference(weights, clips) -> tuple[dict, dict]:
    """The reference's targets, and how far its own targets move on per-GPU batches of half the size (KL): the
    scale the policies are judged on (the stand-ins are far more sensitive to BatchNorm statistics than trained
    networks: random filters make features nearly alike, and the classifier is scaled up to separate them)."""
    targets, halves = reference_targets(weights, clips), reference_targets(weights, clips, FRAMES // 2)
    return targets, {name: compare(targets[name], halves[name])["kl"] for name in targets}


def test_paper_3d_targets_are_close_to_the_reference(weights, clips, reference):
    """Bounds from tools.source_fidelity and this test's stand-ins over seeds: input: frame stays within ~8x the
    reference's own batch-to-batch KL (bound 15x) and keeps ~0.6x its entropy or more (bound 0.4x); eval mode on
    0-255 frames lands at >10,000x with one-hot targets (the next test). Top-1 agreement is not bounded: on these
    stand-ins even the reference at another batch size agrees on only ~half the frames.
    Every paper 3D config resolves its sources as the one measured here."""
    targets, floor = reference
    for name, logits in training_targets(weights, clips).items():
        m = compare(targets[name], logits)
        assert m["kl"] < 15 * floor[name], (name, m, floor[name])
        assert m["entropy"] > max(0.4 * m["reference_entropy"], 0.3), (name, m)  # not degenerate
    shipped = [s.model_dump() for s in resolve_sources(load_config(PAPER_CONFIG))]
    policy = lambda s: {k: v for k, v in s.items() if k not in ("name", "format", "weights")}  # noqa: E731
    for path in PAPER_3D:
        assert all(policy(s.model_dump()) == policy(shipped[0]) for s in resolve_sources(load_config(path))), path


def test_eval_mode_on_0_255_frames_is_caught(weights, clips, reference):
    """What the paper configs computed before (eval mode, the reference's normalisation) fails the bounds above
    by orders of magnitude, with one-hot targets."""
    targets, floor = reference
    for name, logits in training_targets(weights, clips, CANDIDATES["eval 0-255"]).items():
        m = compare(targets[name], logits)
        assert m["kl"] > 1000 * floor[name] and m["entropy"] < 0.1, (name, m, floor[name])


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
