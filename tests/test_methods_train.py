"""Every method end to end on the procedural set: summary.json, exact resume, two processes, config errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState

from engine import checkpoint
from engine.config import ConfigError, load_config
from engine.trainer import train
from tests.conftest import ROOT, train_killed_after_epoch
from tests.test_train import read_jsonl

BASE = """
seed: 0
data:
  dataset: procedural
  root: {data}
  procedural: {{label: shape, train_size: 32, test_size: 16}}
  loader: resident
  batch_size: 16
  eval_batch_size: 16
  views: 4
model: {{target: resnet8, head: linear}}
optim: {{lr: 0.05, schedule: multistep, milestones: [1]}}
train: {{epochs: 1, progress: false}}
source_cache: {{root: {cache}}}
run: {{root: {runs}}}
"""

METHODS = {
    "scratch": "method: {name: scratch}\n",
    "sskt": "method: {name: sskt}\nsources: [{name: object, format: checkpoint, arch: resnet8, weights: SOURCE, "
            "resize: {scale: 1.0}}]\n",
    # The teacher is the scratch run's exported target: arch, classes, mean/std and input size come from it.
    "kd": "method: {name: kd}\nsources: [{name: teacher, format: checkpoint, weights: TEACHER}]\n",
    "dml": "method: {name: dml}\n",
    "maxl": "method: {name: maxl, psi: 2}\n",
}


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture
def write_config(tmp_path, source_checkpoint):
    def write(method: str, name: str = "exp"):
        path = tmp_path / f"{name}.yaml"
        teacher = tmp_path / "runs" / "scratch" / "seed0" / "checkpoints" / "final.pt"
        text = BASE.format(data=tmp_path.parent / "shared-data", cache=tmp_path / "cache", runs=tmp_path / "runs")
        path.write_text(text + METHODS[method].replace("SOURCE", str(source_checkpoint)).replace("TEACHER", str(teacher)))
        return path
    return write


def reset():
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_every_method_writes_a_summary(write_config, tmp_path):
    for method in ("scratch", "sskt", "kd", "dml", "maxl"):
        cfg = load_config(write_config(method), [f"run.name={method}"])
        summary = train(cfg)
        reset()
        saved = json.loads((cfg.run_dir() / "summary.json").read_text())
        assert saved["method"] == method and saved["epochs"] == 1 and 0 <= saved["final"]["test/top1"] <= 100
        assert (saved["head"] is None) == (method in ("scratch", "kd", "dml"))  # a head only where one trains
        final = torch.load(cfg.run_dir() / "checkpoints" / "final.pt", weights_only=True)
        assert final["arch"] == "resnet8" and final["num_classes"] == 6 and final["input_size"] == [32, 32]
        assert final["mean"] == pytest.approx([0.4914, 0.4822, 0.4465]) and len(final["class_names"]) == 6
        assert summary == saved
    kd_run = tmp_path / "runs" / "kd" / "seed0"
    assert {"train/task", "train/kd"} <= set(read_jsonl(kd_run / "metrics.jsonl")[0])
    assert len(list((tmp_path / "cache").glob("teacher-train-*.h5"))) == 1  # the teacher went through the cache
    dml = json.loads((tmp_path / "runs" / "dml" / "seed0" / "summary.json").read_text())
    assert set(dml["networks"]) == {"peer0", "peer1"} and "peer0" in dml["reported"]
    assert dml["final"]["test/top1"] == dml["networks"]["peer0"]["final"]
    mean = (dml["networks"]["peer0"]["final"] + dml["networks"]["peer1"]["final"]) / 2
    assert dml["mean_of_networks"]["test/top1"] == pytest.approx(mean)
    for peer in ("peer0", "peer1"):
        assert (tmp_path / "runs" / "dml" / "seed0" / "checkpoints" / peer / "final.pt").exists()
    maxl = read_jsonl(tmp_path / "runs" / "maxl" / "seed0" / "metrics.jsonl")[0]
    assert {"train/task", "train/aux", "train/meta", "train/entropy", "lr", "lr/generator"} <= set(maxl)


@pytest.mark.parametrize("method", ["dml", "maxl"])
def test_interrupted_run_resumes_bit_for_bit(write_config, monkeypatch, method):
    whole = load_config(write_config(method), ["run.name=whole", "train.epochs=2"])
    train(whole)
    reset()
    parts = load_config(write_config(method), ["run.name=parts", "train.epochs=2"])
    train_killed_after_epoch(parts, monkeypatch, epoch=1)
    train(parts)
    files = ["final.pt"] + (["peer1/final.pt"] if method == "dml" else [])
    for name in files:
        a = torch.load(whole.run_dir() / "checkpoints" / name, weights_only=True)["state_dict"]
        b = torch.load(parts.run_dir() / "checkpoints" / name, weights_only=True)["state_dict"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k and "per_s" not in k} for r in rows]
    assert strip(read_jsonl(whole.run_dir() / "metrics.jsonl")) == strip(read_jsonl(parts.run_dir() / "metrics.jsonl"))


def test_dml_two_processes_agree_with_one(write_config, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    config = str(write_config("dml"))
    one = subprocess.run([sys.executable, "-m", "engine.train", "--config", config, "run.name=one"], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m",
                          "engine.train", "--config", config, "run.name=two"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    m1 = read_jsonl(tmp_path / "runs" / "one" / "seed0" / "metrics.jsonl")[0]
    m2 = read_jsonl(tmp_path / "runs" / "two" / "seed0" / "metrics.jsonl")[0]
    assert json.loads((tmp_path / "runs" / "two" / "seed0" / "summary.json").read_text())["processes"] == 2
    assert m1["train/images"] == m2["train/images"] == 32
    for peer in ("peer0", "peer1"):
        assert m1[f"test/{peer}/images"] == m2[f"test/{peer}/images"] == 16
        # BatchNorm statistics are per process on CPU, so the losses agree closely, not exactly.
        assert m2[f"train/{peer}/task"] == pytest.approx(m1[f"train/{peer}/task"], rel=0.05)
    assert m2["train/loss"] == pytest.approx(m1["train/loss"], rel=0.05)


def test_a_field_of_another_method_exits_2_naming_the_key(write_config, tmp_path):
    result = subprocess.run([sys.executable, "-m", "engine.train", "--config", str(write_config("kd")),
                             "method.peers=[resnet8]"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "unknown key method.peers in the kd section of method (a key of the dml section)" in result.stderr


@pytest.mark.parametrize("method,override,key", [("dml", "method.alpha=0.5", "method.alpha"),
                                                 ("scratch", "method.psi=5", "method.psi"),
                                                 ("maxl", "method.aux_loss=kd", "method.aux_loss")])
def test_each_method_section_has_only_its_own_fields(write_config, method, override, key):
    with pytest.raises(ConfigError, match=rf"unknown key {key} in the {method} section of method \(a key of the "):
        load_config(write_config(method), [override])


def test_method_rules_live_with_the_methods(write_config):
    with pytest.raises(ConfigError, match="kd needs exactly one entry in sources"):
        load_config(write_config("kd"), ["sources=[]"])
    with pytest.raises(ConfigError, match="dml uses no sources"):
        load_config(write_config("sskt"), ["method={name: dml}"])
    with pytest.raises(ConfigError, match=r"method.name: unknown method; known: dml, kd, maxl, scratch, sskt"):
        load_config(write_config("dml"), ["method.name=dmll"])
