"""`make bench` runs the real training loop: a smoke run keeps it from rotting when the engine changes.

Only that it runs and reports every figure is checked here; the figures themselves come from
`make bench` on an idle machine, never from a test.
"""
from __future__ import annotations

import argparse

from accelerate import Accelerator

from tools.bench import bench_training


def test_training_bench_runs_every_setting(tmp_path):
    result = bench_training(argparse.Namespace(steps=1, batch=4), tmp_path, Accelerator(cpu=True))
    assert set(result["images_per_s"]) == {"live", "cached", "in_memory", "scratch"}
    assert all(rate > 0 for rate in result["images_per_s"].values())
    assert result["cache"]["samples"] == 4 and result["cache"]["bytes"] > 0
