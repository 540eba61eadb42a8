"""make gpu-bench end to end on the CPU at its smoke sizes: every row's code path, the table and the JSON."""
from __future__ import annotations

import json

import torch
from accelerate.state import AcceleratorState, GradientState

from tools import gpu_bench


def test_smoke_run_measures_every_row_and_writes_the_json(tmp_path, monkeypatch, capsys):
    # The compiled rows ask for compilation (compiled = eager: tests/test_compile.py); compiling ResNet-20 and
    # a 3D ResNet-18 on a CPU would take minutes
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append(kw))
    out = tmp_path / "gpu-test.json"
    try:
        assert gpu_bench.main(["--smoke", "--out", str(out), "--name", "test"]) == 0
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    report = json.loads(out.read_text())
    assert report["name"] == "test" and report["smoke"] and report["provenance"]["git"]["commit"]
    for r in (report["2d"]["scratch"], report["2d"]["two_transfer_modules"], report["3d"], report["video_demo"]):
        assert r["per_s"]["eager"] > 0 and r["per_s"]["compiled"] > 0
        assert r["compiled_over_eager"] == r["per_s"]["compiled"] / r["per_s"]["eager"]
        assert all(s > 0 for mode in ("eager", "compiled") for s in r["epoch_s"][mode])
    # the 2D scratch and SSKT targets, the 3D ResNet-18, the video demo's target; eager elsewhere
    assert compiled == [{"mode": "default"}] * 4
    assert report["3d"]["loader_per_s"] > 0 and report["3d"]["clip"] == "4x32x32"
    # the video demo's own network and clips (on 54 videos instead of 1,200), the loader auto picks
    demo = report["video_demo"]
    assert (demo["target"], demo["clip"], demo["batch"]) == ("resnet3d_10_w16", "8x32x32", 16)
    assert demo["loader"] in ("TorchClipLoader", "DaliClipLoader")
    assert report["packed"]["jobs"] == 2 and report["packed"]["packed"] > 0 and report["packed"]["one"] > 0
    assert set(report["loaders"]) == {"arrays_32x32", "jpeg_500x375_to_224"}
    printed = capsys.readouterr().out
    assert report["table"] in printed and len(report["table"].splitlines()) == 2 + 4 + 3 + 2 + 2 + 5  # header, rows
    assert "| ResNet-20 SSKT, 2 modules, compiled |" in report["table"]
    assert "| video demo SSKT epoch (resnet3d_10_w16, 8x32x32, batch 16, " in report["table"]


def test_device_name_is_the_gpu_model(monkeypatch):
    assert gpu_bench.device_name() == "cpu"  # no GPU here
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for full, short in {"NVIDIA H100 80GB HBM3": "h100", "NVIDIA A100-SXM4-40GB": "a100", "NVIDIA H200": "h200",
                        "NVIDIA GeForce RTX 4090": "4090"}.items():
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda index, full=full: full)
        assert gpu_bench.device_name() == short, full
