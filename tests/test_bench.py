"""`make bench` runs the real training loop: a smoke run keeps it from rotting when the engine changes.

Only that it runs and reports every figure is checked here; the figures themselves come from
`make bench` on an idle machine, never from a test.
"""
from __future__ import annotations

import argparse

from accelerate import Accelerator

from tools.bench import bench_training


def test_training_bench_runs_every_setting(tmp_path):
    result = bench_training(argparse.Namespace(steps=1, batch=4, layout_repeats=1), tmp_path, Accelerator(cpu=True))
    assert set(result["images_per_s"]) == {"live", "cached", "in_memory", "scratch"}
    assert all(rate > 0 for rate in result["images_per_s"].values())
    assert set(result["layouts"]) == {"scratch", "two_transfer_modules"}
    assert result["cache"]["samples"] == 4 and result["cache"]["bytes"] > 0
    for layouts in result["layouts"].values():  # both settings, both layouts, and their ratio
        assert set(layouts["median_images_per_s"]) == {"nchw", "channels_last"}
        assert layouts["channels_last_over_nchw"] > 0
