"""make gpu-check: exits 0 without a GPU; its checks' code runs here on the CPU where it can."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from argparse import Namespace

import torch
from accelerate.state import AcceleratorState, GradientState

from tests.conftest import ROOT
from tools import gpu_check

CPU = torch.device("cpu")
TINY = Namespace(steps=1, batch=8, jpegs=8, verbose=False)


def test_without_a_gpu_it_says_so_and_exits_0():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "tools.gpu_check"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no CUDA GPU" in done.stdout


def test_each_check_is_reported_ok_skipped_or_failed_without_stopping_the_others(capsys):
    def ok(device, args, folder):
        assert folder.is_dir()
        return "123 img/s"

    def skipped(device, args, folder):
        raise gpu_check.Skip("1 GPU")

    def broken(device, args, folder):
        raise RuntimeError("nvJPEG said no\nsecond line")

    rows = gpu_check.run_checks([("a", ok), ("b", broken), ("c", skipped), ("d", ok)], CPU, TINY)
    assert rows == [("a", "ok", "123 img/s"), ("b", "failed", "RuntimeError: nvJPEG said no"),
                    ("c", gpu_check.SKIPPED, "1 GPU"), ("d", "ok", "123 img/s")]
    table = gpu_check.table(rows)
    assert table.splitlines()[0] == "| path | status | figure |" and "| b | failed | RuntimeError: nvJPEG said no |" in table


def test_training_cache_and_dali_checks_run_on_the_cpu(tmp_path):
    try:  # the engine's loop in both layouts (the autocast checks differ only in the precision given)
        assert re.fullmatch(r"\d+ img/s \(\d+\.\d\dx NCHW's \d+, no\)", gpu_check.check_channels_last(CPU, TINY, tmp_path))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    assert "lookups/s" in gpu_check.check_cache_on_gpu(CPU, TINY, tmp_path / "cache")
    (tmp_path / "jpegs").mkdir()
    assert "max 0 grey levels" in gpu_check.check_dali_mixed(CPU, TINY, tmp_path / "jpegs")  # CPU vs CPU: equal


def test_distributed_worker_all_reduces_across_processes():
    result = gpu_check.run_distributed(2, "gloo")  # the NCCL check's code, on CPU processes
    assert result["all_reduce_bus_gb_s"] > 0 and "sync_bn_max_diff" not in result


def test_only_selects_checks_by_words_in_their_names():
    assert [name for name, _ in gpu_check.selected_checks("dali")] == ["DALI mixed JPEG decoding", "DALI clips on the GPU"]
    assert [name for name, _ in gpu_check.selected_checks("BF16, cache")] == ["bf16 autocast training",
                                                                             "source cache on the GPU"]
    assert len(gpu_check.selected_checks("")) == len(gpu_check.CHECKS)
    try:
        gpu_check.selected_checks("tpu")
    except SystemExit as e:
        assert "'tpu' names none of" in str(e)
    else:
        raise AssertionError("an --only that names no check must stop with a message")
