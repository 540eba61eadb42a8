"""End-to-end runs of the engine on the procedural set (CPU, seconds each)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState

from engine import checkpoint
from engine.config import load_config
from engine.trainer import train
from tests.conftest import ROOT, train_killed_after_epoch


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def final_state(run_dir):
    return torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)["state_dict"]


def test_two_epoch_run_writes_everything(tiny_config):
    cfg = load_config(tiny_config)
    summary = train(cfg)
    run = cfg.run_dir()
    assert run.name == "seed0" and run.parent.name == "tiny"
    saved = json.loads((run / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["epochs"] == 2 and saved["metric"] == "test/top1" and 0 <= saved["best"]["test/top1"] <= 100
    assert saved["parameters"]["deployed_target"] > 0 and saved["parameters"]["training_heads"] > 0
    assert saved["images_per_s"] > 0
    metrics = read_jsonl(run / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert all(m["train/images"] == 96 and m["test/images"] == 50 for m in metrics)
    assert {"train/loss", "train/task", "train/aux/object", "train/top1", "lr"} <= set(metrics[0])
    assert metrics[1]["lr"] == pytest.approx(0.05 * 0.2)  # multistep at epoch 1
    assert (run / "config.yaml").exists() and (run / "checkpoints" / "last" / "trainer.json").exists()
    assert list((run / "tensorboard").rglob("events.out.tfevents*"))
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["arch"] == "resnet8" and best["num_classes"] == 6
    assert not any(k.startswith("heads") for k in best["state_dict"])  # deployed target only
    assert train(cfg) == saved  # a finished run is not trained again


def test_interrupted_run_resumes_to_the_same_state(tiny_config, monkeypatch):
    uninterrupted = load_config(tiny_config, ["run.name=whole", "train.epochs=3"])
    train(uninterrupted)

    interrupted = load_config(tiny_config, ["run.name=parts", "train.epochs=3"])
    train_killed_after_epoch(interrupted, monkeypatch, epoch=1)
    train(interrupted)

    a, b = final_state(uninterrupted.run_dir()), final_state(interrupted.run_dir())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k and "per_s" not in k} for r in rows]
    assert strip(read_jsonl(uninterrupted.run_dir() / "metrics.jsonl")) == \
        strip(read_jsonl(interrupted.run_dir() / "metrics.jsonl"))


def test_a_trial_never_blocks_the_next_run(tiny_config, capsys):
    """Settings a run cannot be continued into (a trial's 1-epoch cosine, then the full 2 epochs) train in a
    fresh numbered folder and say so in one line, leaving the trial's folder untouched; the same settings again
    find their run there; run.resume=false always starts a fresh folder."""
    fast = ["sources=[]", "method={name: scratch}", "optim.schedule=cosine", "data.batch_size=16",
            "data.procedural={label: shape, train_size: 32, test_size: 16}"]
    trial = load_config(tiny_config, [*fast, "train.epochs=1"])
    train(trial)
    folder = trial.run_dir()
    before = {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    capsys.readouterr()
    for extra, expected, said in (([], "tiny-2", "(cosine) spans train.epochs=1; continuing it to 2 would not end"),
                                  ([], "tiny-2", "tiny-2/seed0: already finished"),
                                  (["run.resume=false"], "tiny-3", "run.resume is false; this run goes to")):
        AcceleratorState._reset_state(reset_partial_state=True)
        summary = train(load_config(tiny_config, [*fast, "train.epochs=2", *extra]))
        assert summary["run"] == expected and summary["epochs"] == 2
        assert said in capsys.readouterr().out
    assert {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} == before
    assert json.loads((folder / "summary.json").read_text())["epochs"] == 1
    assert (tiny_config.parent / "runs" / "tiny-3" / "seed0" / "summary.json").exists()


def test_two_processes_agree_with_one(tiny_config, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    common = ["--config", str(tiny_config), "train.epochs=1", "data.views=4", "sources.0.cache=auto"]  # the default path
    one = subprocess.run([sys.executable, "-m", "engine.train", *common, "run.name=one"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    # The 2-process run records the sample indices each process trains on (tests/trace_indices.py).
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          str(ROOT / "tests" / "trace_indices.py"), str(tmp_path / "trace"), *common, "run.name=two"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    per_rank = [json.loads((tmp_path / "trace" / f"rank{r}.json").read_text())["0"] for r in (0, 1)]
    assert len(per_rank[0]) == len(per_rank[1]) == 48  # equal slices of every global batch
    assert sorted(per_rank[0] + per_rank[1]) == list(range(96))  # every sample exactly once in the epoch
    runs = tmp_path / "runs"
    m1 = read_jsonl(runs / "one" / "seed0" / "metrics.jsonl")[0]
    m2 = read_jsonl(runs / "two" / "seed0" / "metrics.jsonl")[0]
    s2 = json.loads((runs / "two" / "seed0" / "summary.json").read_text())
    assert s2["processes"] == 2
    assert len(list((tmp_path / "source_cache").glob("object-train-*.h5"))) == 1  # built once, then shared
    assert m1["train/images"] == m2["train/images"] == 96  # the same samples, split across processes
    assert m1["test/images"] == m2["test/images"] == 50  # evaluation neither drops nor duplicates
    print("1 process:", m1, "\n2 processes:", m2)
    # BatchNorm statistics are per process on CPU (SyncBatchNorm needs a GPU), so losses agree closely, not exactly.
    assert m2["train/loss"] == pytest.approx(m1["train/loss"], rel=0.05)


def test_multilabel_voc_run_reports_map_and_sample_ap(tmp_path, source_checkpoint):
    """VOC files through the whole engine: JPEG loader, BCE task loss, a cached source, mAP metrics."""
    from tests.test_datasets import write_voc
    write_voc(tmp_path / "voc")
    config = tmp_path / "voc.yaml"
    config.write_text(f"""
data: {{dataset: voc2007, root: {tmp_path / 'voc'}, image_size: 32, views: 2, batch_size: 2, workers: 0,
        mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}}
model: {{target: resnet8, head: linear}}
sources: [{{name: object, format: checkpoint, arch: resnet8, weights: {source_checkpoint}, resize: {{size: 40}}}}]
method: {{name: sskt, task_loss: bce}}
train: {{epochs: 1, progress: false}}
source_cache: {{root: {tmp_path / 'cache'}}}
run: {{root: {tmp_path / 'runs'}}}
""")
    summary = train(load_config(config))
    assert summary["metric"] == "test/sample_ap"  # the paper's VOC figure selects best.pt
    assert set(summary["final"]) == {"test/mAP", "test/sample_ap", "test/images", "test/loss"}
    assert summary["final"]["test/images"] == 1
    assert 0 <= summary["final"]["test/sample_ap"] <= 100
    assert len(list((tmp_path / "cache").glob("object-train-*.h5"))) == 1
