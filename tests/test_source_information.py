"""tools/source_information.py: the soft cross-entropy floors of an SSKT head, per what it could know."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from engine.config import load_config
from engine.experiment import Experiment
from pipelines.datasets import procedural_video as pv
from tests.conftest import ROOT
from tests.test_video_train import reset
from tools import demo_video, source_information


def test_cross_entropy_to_group_means_by_hand():
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.5, 0.5]])
    # groups {0, 1} (mean [0.5, 0.5]) and {2, 3} (mean [0.5, 0.5]): every sample scores log 2
    assert source_information.cross_entropy_to_group_means(probs, np.array([7, 7, 3, 3])) == pytest.approx(math.log(2))
    # groups {0, 2} (mean [0.75, 0.25]) and {1, 3} (mean [0.25, 0.75])
    expected = (-math.log(0.75) * 2 + 2 * -(0.5 * math.log(0.75) + 0.5 * math.log(0.25))) / 4
    assert source_information.cross_entropy_to_group_means(probs, np.array([0, 1, 0, 1])) == pytest.approx(expected)


def test_parse_name_inverts_video_name():
    for label, group, clip in [(0, 1, 1), (5, 25, 8), (3, 12, 99)]:
        name = pv.video_name(label, group, clip)
        assert pv.parse_name(name) == pv.parse_name(name.removesuffix(".avi")) == (label, group, clip)


def test_the_video_demo_floors_are_ordered_as_what_the_head_knows(tmp_path, source_checkpoint):
    """On a tiny prepared demo set where every action shows its own shape: every floor lies between the
    source's entropy and `nothing`, a finer grouping never scores worse (the group mean minimises its members'
    mean cross-entropy), and the generator's shape groups the draws exactly as the class does."""
    report = demo_report(tmp_path, {"own_shape": 1.0}, [f"sources.0.weights={source_checkpoint}"])
    row = report["object"]
    train_videos = 6 * 3 * 2  # groups 2-4 train on split 1
    assert row["draws"] == 2 * train_videos and row["temperature"] == 1.0
    assert row["entropy"] <= row["sample"] <= row["class"] <= row["nothing"] <= math.log(36) + 1e-6
    for kind in ("shape x size", "shape x colour"):
        assert row["entropy"] <= row[kind] <= row["shape"] <= row["nothing"]
    assert row["shape"] == pytest.approx(row["class"])  # names parsed to the right videos' factors
    assert set(row["top1"]) == {"shape", "shape x colour"}  # 36 classes: the fine-grained source's label space
    assert 0 <= row["top1"]["shape x colour"] <= row["top1"]["shape"] <= 100
    json.dumps(report)  # what --out writes


def test_the_committed_object_source_names_the_true_shape(tmp_path):
    """With the object-like source's 18 labels (shape x size), the report says how often its top-1 names the
    video's true shape and shape x size: far above chance (1 in 6, 1 in 18) for the committed source, and a
    right shape x size is a right shape."""
    top1 = demo_report(tmp_path, {}, [])["object"]["top1"]
    assert 60 < top1["shape"] <= 100 and 100 / 18 < top1["shape x size"] <= top1["shape"], top1


def test_images_and_the_command_line(tiny_config, tmp_path, capsys):
    """On images (each draw one of an image's views), through main(): the printed floors and the --out file
    agree, every floor lies between the source's entropy and `nothing`, and no video factor is reported."""
    out = tmp_path / "info.json"
    assert source_information.main(["--config", str(tiny_config), "--epochs", "2", "--out", str(out)]) == 0
    row = json.loads(out.read_text())["object"]
    assert row["draws"] == 2 * 96 and row["temperature"] == load_config(tiny_config).method.temperature
    assert row["entropy"] <= row["sample"] <= row["class"] <= row["nothing"]
    assert "shape" not in row and "top1" not in row
    printed = capsys.readouterr().out
    assert f"class                {row['class']:.3f}" in printed and "the source itself" in printed


def test_a_config_without_sources_is_one_line(capsys):
    assert source_information.main(["--config", str(ROOT / "configs/demo/video_scratch.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {ROOT / 'configs/demo/video_scratch.yaml'}: no sources to score (the config's `sources` "
                   "is empty)"]


def demo_report(tmp_path, design: dict, overrides: list[str]) -> dict:
    """The report on 2 epochs of a tiny prepared video demo set (4 groups x 2 clips, the shipped design updated
    by `design`), from configs/demo/video_sskt.yaml with `overrides`."""
    options = {**load_config(ROOT / "configs/demo/video_sskt.yaml").data.procedural, "groups": 4, "clips": 2, **design}
    store = demo_video.prepare_store(tmp_path / "procedural_video.h5", workers=1, **options)
    cfg = load_config(ROOT / "configs/demo/video_sskt.yaml", [
        f"data.root={store}", "data.workers=0", *(f"data.procedural.{key}={value}" for key, value in options.items()),
        f"source_cache.root={tmp_path / 'cache'}", f"run.root={tmp_path / 'runs'}", *overrides])
    try:
        return source_information.information(Experiment(cfg, splits=("train",)), epochs=2)
    finally:
        reset()
