"""`make bench` runs the real training loop: a smoke run keeps it from rotting when the engine changes.

Only that it runs and reports every figure is checked here; the figures themselves come from
`make bench` on an idle machine, never from a test.
"""
from __future__ import annotations

import argparse
import json

from accelerate import Accelerator

import pytest

from engine.config import load_config
from engine.experiment import Experiment, resolve_sources
from models.sources import load_source
from tools.bench import PARTS, bench_training, main, parts_list, write_docs
from tools.bench_video import CLIP_FIGURES
from tools.bench_video3d import WORKLOADS, bench_config, prepare_videos, write_weights


def test_training_bench_runs_every_setting(tmp_path):
    result = bench_training(argparse.Namespace(steps=1, batch=4, layout_repeats=1), tmp_path, Accelerator(cpu=True))
    assert set(result["images_per_s"]) == {"live", "cached", "in_memory", "scratch"}
    assert all(rate > 0 for rate in result["images_per_s"].values())
    assert set(result["layouts"]) == {"scratch", "two_transfer_modules"}
    assert result["cache"]["samples"] == 4 and result["cache"]["bytes"] > 0
    for layouts in result["layouts"].values():  # both settings, both layouts, and their ratio
        assert set(layouts["median_images_per_s"]) == {"nchw", "channels_last"}
        assert layouts["channels_last_over_nchw"] > 0


def test_video_bench_reports_every_figure(tmp_path, capsys):
    """The video part end to end on four tiny videos (two in split 1's training list), one short round:
    every clip figure and ratio comes back."""
    out = tmp_path / "results.json"
    assert main(["--only", "video", "--videos", "4", "--video-frames", "20", "--workers", "1", "--clips", "8",
                 "--clip-rounds", "1", "--short-side", "96", "--out", str(out)]) == 0
    video = json.loads(out.read_text())["video"]
    assert set(video["train_clips_per_s"]) == set(CLIP_FIGURES)
    assert all(len(rates) == 1 and rates[0] > 0 for rates in video["train_clips_per_s_rounds"].values())
    ratios = ("dali_over_jpeg_folder", "dali_over_decode_limit", "store_over_ffmpeg_frames_per_s")
    assert all(video[ratio] > 0 for ratio in ratios)
    assert video["frames"] == 80 and video["bytes"]["frame_store_jpeg_per_frame"] > 0
    assert video["frame_size"] == {"frame_store": [128, 96], "jpeg_folders": [128, 96]}  # --short-side reaches both
    assert "clips/s" in capsys.readouterr().out


def test_only_takes_a_comma_list_of_parts():
    assert parts_list("training, video3d") == ("training", "video3d")
    assert parts_list("loaders") == ("loaders",)
    with pytest.raises(argparse.ArgumentTypeError, match="unknown bench part.*'gpu'.*choose from training"):
        parts_list("training,gpu")
    assert set(PARTS) == {"training", "loaders", "video", "video3d"}


def test_sizes_default_by_device_and_given_ones_stay():
    from tools.bench import sized_for_device
    given = argparse.Namespace(steps=3, batch=None, workers=None, clip_batch=None, clip_steps=None)
    cpu = sized_for_device(argparse.Namespace(**vars(given)), gpu=False)
    gpu = sized_for_device(argparse.Namespace(**vars(given)), gpu=True)
    assert (cpu.steps, cpu.batch, cpu.workers, cpu.clip_batch, cpu.clip_steps) == (3, 64, 2, 2, 2)
    assert (gpu.steps, gpu.batch, gpu.workers, gpu.clip_batch, gpu.clip_steps) == (3, 128, 8, 8, 10)


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_the_3d_bench_trains_what_training_trains(name, tmp_path):
    """The 3D bench's experiment is the shipped config with only data, batch and caches replaced: the same
    target, heads, method and clips, and sources loaded with the same input (size, statistics, BatchNorm
    mode, cache key) as `make train` gives them on the same weights."""
    workload = WORKLOADS[name]
    weights = write_weights(load_config(workload.config), tmp_path)
    args = argparse.Namespace(clip_batch=2, clip_steps=1, workers=1)
    bench = bench_config(workload, tmp_path, args, "cached", weights)
    train = load_config(workload.config, weights)
    assert bench.model == train.model and bench.method == train.method
    for key in ("clip_length", "sample_size", "views", "mean", "std"):
        assert getattr(bench.data, key) == getattr(train.data, key), key
    prepare_videos(workload, tmp_path, args)
    bench_sources = Experiment(bench, Accelerator(cpu=True), splits=("train",)).sources  # what the bench times
    train_sources = [load_source(s, i) for i, s in enumerate(resolve_sources(train))]
    assert len(bench_sources) == len(train_sources) > 0
    size = train.data.sample_size
    for b, t in zip(bench_sources, train_sources):
        assert b.fingerprint() == t.fingerprint()  # arch, weights, resize, mean/std, input policy
        assert b.input_size(size, size) == t.input_size(size, size)
        assert (b.mean, b.std, b.batch_statistics) == (t.mean, t.std, t.batch_statistics)
    if name == "resnet3d_18":  # the paper's 3D sources see the clip's frame at its own size
        assert all(t.input_size(size, size) == (size, size) for t in train_sources)


def test_docs_get_the_runs_tables_between_their_markers_only(tmp_path):
    report = {"device": "cpu", "torch_threads": 2,
              "provenance": {"command": "python -m tools.bench --only loaders", "device": "cpu: x86_64, 2 cores",
                             "packages": {"torch": "2.x"}},
              "loaders": {"arrays_32x32": {"torch": 10.0, "resident": 30.0, "dali": 20.0},
                          "jpeg_500x375_to_224": {"torch": 4.0, "dali": 5.0}}}
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\nprose\n<!-- bench:cpu -->\nold figures\n<!-- /bench:cpu -->\nafter\n")
    write_docs(report, docs)
    text = docs.read_text()
    assert text.startswith("# Benchmarks\nprose\n<!-- bench:cpu -->\n_Generated by `python -m tools.bench --only loaders`")
    assert text.endswith("<!-- /bench:cpu -->\nafter\n") and "old figures" not in text
    assert "| resident | 30 | n/a |" in text and "| dali | 20 | 5 |" in text  # the report's own figures
    lines = text.splitlines()
    first_row = next(i for i, line in enumerate(lines) if line.startswith("|"))
    assert lines[first_row - 1] == ""  # a table starts after a blank line, or markdown shows it as text
    with pytest.raises(ValueError, match="bench:gpu"):
        write_docs({**report, "device": "cuda:0"}, docs)  # no GPU section in that file: it is left as it was
    assert docs.read_text() == text
