"""Video through the engine: per-frame source cache, 3D SSKT runs (cached and live sources), clip and
video accuracy, exact resume with the plateau schedule, two processes, fine-tuning from a Hara checkpoint."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState

from engine import checkpoint
from engine.config import ConfigError, SourceCacheConfig, load_config
from engine import predict as predict_module
from engine.evaluate import main as evaluate_main
from models.sources import load_deployed
from engine.source_outputs.frame_cache import open_frame_cache
from engine.optim import OptimConfig, build_scheduler
from engine.train import main
from engine.trainer import train
from models.registry import build_target
from models.sources import load_source
from pipelines.datasets.video import VIDEO_READERS
from pipelines.render import render_clip
from pipelines.views import ClipViewSet, clip_frame_indices
from tests.conftest import ROOT, train_killed_after_epoch
from tests.test_train import read_jsonl
from tools import preprocess_video
from tools.synthetic_videos import write_ucf101

T, SIZE = 8, 32
CONFIG = """
seed: 0
data: {{dataset: ucf101, root: {data}, split: 1, clip_length: 8, sample_size: 32, views: 4, loader: torch, workers: 0,
        batch_size: 4, eval_batch_size: 8, val_clips: 3,
        mean: [0.4502, 0.4225, 0.3901], std: [0.0039216, 0.0039216, 0.0039216]}}
model: {{target: resnet3d_10, head: linear}}
sources: [{{name: object, format: checkpoint, arch: resnet8, weights: {weights}, resize: {{size: 40}}, cache: auto}}]
method: {{name: sskt, aux_loss: ce, temperature: 1.0, alpha: 1.0, aux_reduction: batchmean}}
optim: {{lr: 0.01, momentum: 0.9, dampening: 0.9, weight_decay: 0.001, schedule: plateau, plateau_patience: 0}}
train: {{epochs: 1, progress: false}}
source_cache: {{root: {cache}, frame_stride: 1}}
run: {{root: {runs}}}
"""


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    reset()


def reset():
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """2 classes x 5 groups of 20-frame 48x36 videos: split 1 trains on 8, tests on 2."""
    base = tmp_path_factory.mktemp("video")
    write_ucf101(base / "UCF-101", ["Alpha", "Beta"], per_class=5, frames=20, size=(48, 36))
    assert preprocess_video.main(["--dataset", "ucf101", "--root", str(base / "UCF-101"), "--out",
                                  str(base / "ucf101.h5"), "--short-side", "36", "--clip-length", str(T),
                                  "--workers", "1", "--no-progress"]) == preprocess_video.EXIT_OK
    return base


@pytest.fixture
def config(tmp_path, store, source_checkpoint):
    path = tmp_path / "video.yaml"
    path.write_text(CONFIG.format(data=store, weights=source_checkpoint, cache=tmp_path / "cache", runs=tmp_path / "runs"))
    return path


def test_per_frame_cache_returns_the_clips_cached_middle_frame(store, source_checkpoint, tmp_path):
    videos = VIDEO_READERS["ucf101"](types.SimpleNamespace(root=store, split=1), "train")
    any_store = VIDEO_READERS["frames"](types.SimpleNamespace(root=store / "ucf101.h5", split=1), "train")
    assert any_store.fingerprint == videos.fingerprint and list(any_store.rows) == list(videos.rows)
    views = ClipViewSet(count=6, size=SIZE)
    source = load_source(types.SimpleNamespace(name="object", format="checkpoint", arch="resnet8",
                                               weights=str(source_checkpoint), num_classes=None,
                                               resize={"size": 40}, mean=None, std=None))
    provider = open_frame_cache(source, videos, views, T, SourceCacheConfig(root=tmp_path, frame_stride=3), "auto",
                                progress=False, block_samples=5)  # several blocks
    assert len(provider.frames) == sum(-(-n // 3) for n in videos.frame_counts)
    cases = [(0, 0, 0), (1, 5, 3), (2, 3, 12), (3, 1, 7), (7, 4, 11), (5, 2, 9)]
    index, view, start = (torch.tensor(c) for c in zip(*cases))
    got = provider({"index": index, "view": view, "start": start, "image": None})
    for row, (v, w, s) in enumerate(cases):
        n = int(videos.frame_counts[v])
        centre = clip_frame_indices(n, s, T)[T // 2]
        cached = min(int(np.floor(centre / 3 + 0.5)) * 3, (n - 1) // 3 * 3)  # the nearest cached frame
        frame = render_clip(videos, v, w, cached, 1, views)  # [1, S, S, 3]: that frame, in that crop and flip
        if cached == centre:  # the very pixels of the clip's middle frame
            assert np.array_equal(frame[0], render_clip(videos, v, w, s, T, views)[T // 2])
        want = source(torch.from_numpy(frame).permute(0, 3, 1, 2).float() / 255)[0]
        assert torch.allclose(got[row], want, atol=2e-2, rtol=2e-3), (v, w, s)
    assert any(c[1] % 2 for c in cases)  # flipped views are among them


def test_sskt_video_run_cached_and_live(config, store, capsys):
    """One epoch of 3D SSKT with the source cached (every frame) and live: the same losses,
    summary.json with clip, video and validation-style clip accuracy, and engine.evaluate
    reproducing them from the exported final.pt; engine.predict on the test videos' files agrees."""
    from tools import cache_sources
    assert cache_sources.main(["--config", str(config)]) == 0  # `make cache` builds what training then requires
    reset()
    summaries, records = {}, {}
    for mode, name in (("required", "cached"), ("off", "live")):
        cfg = load_config(config, [f"run.name={name}", f"sources.0.cache={mode}"])
        summaries[mode] = train(cfg)
        reset()
        records[mode] = read_jsonl(cfg.run_dir() / "metrics.jsonl")[0]
        assert summaries[mode] == json.loads((cfg.run_dir() / "summary.json").read_text())
    cached, live = records["required"], records["off"]
    for key in ("train/loss", "train/task", "train/aux/object"):
        assert cached[key] == pytest.approx(live[key], rel=1e-3), key  # float16 storage of the logits
    summary = summaries["required"]
    assert summary["metric"] == "test/video_top1"
    final = summary["final"]
    for key in ("test/clip_top1", "test/video_top1", "test/val_clip_top1", "test/loss", "test/val_loss"):
        assert key in final and (key.endswith("loss") or 0 <= final[key] <= 100), key
    assert final["test/video_top1_by_name"] == final["test/video_top1"]  # no class is named in another's videos
    assert final["test/videos"] == 2 and final["test/clips"] == 2 * -(-20 // T)  # every frame, in 8-frame clips
    assert final["test/val_clips"] == 2 * len(range(0, 19, max(1, -(-(20 - 1 - T) // 2))))  # the reference's starts
    assert cached["train/images"] == 8  # clips: every training video once

    # `make evaluate` on the run folder scores final.pt with training's own video evaluator: the same figures.
    run = load_config(config, ["run.name=cached"]).run_dir()
    assert evaluate_main(["--run", str(run)]) == 0
    written = json.loads((run / "eval_final.json").read_text())
    for key in ("test/video_top1", "test/clip_top1", "test/val_clip_top1", "test/clips", "test/videos", "test/val_clips"):
        assert written[key] == pytest.approx(final[key], abs=1e-6), key
    for key in ("test/loss", "test/val_loss"):
        assert written[key] == pytest.approx(final[key], rel=1e-5), key

    # `make predict` on the test videos' files: one prediction per file, the softmax averaged over its
    # consecutive 8-frame centre-crop clips. Stored at the training store's short side, the frames are
    # the very pixels training scored: the top classes give test/video_top1, the probabilities are the
    # mean softmax computed here clip by clip.
    test_videos = VIDEO_READERS["ucf101"](types.SimpleNamespace(root=store, split=1), "test")
    files = [store / "UCF-101" / f"{test_videos.store.table.names[row]}.avi" for row in test_videos.rows]
    results = list(predict_module.predict(run / "checkpoints" / "final.pt", files, top=2, short_side=36).results.values())
    network, _ = load_deployed(run / "checkpoints" / "final.pt")
    hits = []
    for v, result in enumerate(results):
        starts = range(0, int(test_videos.frame_counts[v]), T)
        clips = np.stack([render_clip(test_videos, v, 0, s, T, ClipViewSet(count=1, size=SIZE)) for s in starts])
        want = network(torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 255).softmax(1).mean(0)
        assert [name for name, _ in result] == [test_videos.class_names[i] for i in want.argsort(descending=True)]
        assert [p for _, p in result] == pytest.approx(want.sort(descending=True).values.tolist(), abs=1e-5)
        hits.append(result[0][0] == test_videos.class_names[test_videos.labels[v]])
    assert 100 * np.mean(hits) == pytest.approx(final["test/video_top1"])
    capsys.readouterr()
    assert predict_module.main(["--checkpoint", str(run / "checkpoints" / "final.pt"), str(files[0]), str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{config}: not a video PyAV can decode" in err, err


def test_interrupted_video_run_resumes_exactly(config, monkeypatch):
    """Plateau schedule with patience 0: the lr changes between epochs, so its state must be restored too."""
    whole = load_config(config, ["run.name=whole", "train.epochs=2"])
    train(whole)
    reset()
    parts = load_config(config, ["run.name=parts", "train.epochs=2"])
    train_killed_after_epoch(parts, monkeypatch, epoch=1)
    train(parts)
    a = torch.load(whole.run_dir() / "checkpoints" / "final.pt", weights_only=True)["state_dict"]
    b = torch.load(parts.run_dir() / "checkpoints" / "final.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k and "per_s" not in k} for r in rows]
    assert strip(read_jsonl(whole.run_dir() / "metrics.jsonl")) == strip(read_jsonl(parts.run_dir() / "metrics.jsonl"))


def test_video_two_processes_agree_with_one(config, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    common = ["--config", str(config), "optim.schedule=multistep"]
    one = subprocess.run([sys.executable, "-m", "engine.train", *common, "run.name=one"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m",
                          "engine.train", *common, "run.name=two"], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    m1 = read_jsonl(tmp_path / "runs" / "one" / "seed0" / "metrics.jsonl")[0]
    m2 = read_jsonl(tmp_path / "runs" / "two" / "seed0" / "metrics.jsonl")[0]
    assert json.loads((tmp_path / "runs" / "two" / "seed0" / "summary.json").read_text())["processes"] == 2
    assert len(list((tmp_path / "cache").glob("object-train-*.h5"))) == 1  # built once, then shared
    assert m1["train/images"] == m2["train/images"] == 8
    for key in ("test/clips", "test/videos", "test/val_clips"):  # no clip dropped or scored twice
        assert m1[key] == m2[key], key
    # BatchNorm statistics are per process on CPU (SyncBatchNorm needs a GPU): close, not exact.
    assert m2["train/loss"] == pytest.approx(m1["train/loss"], rel=0.05)
    assert m2["train/aux/object"] == pytest.approx(m1["train/aux/object"], rel=0.05)


def test_fine_tuning_trains_only_layer4_and_fc(config, tmp_path):
    """A Hara-format checkpoint (arch, `module.` keys, 400 classes) with ft_begin_index 4: conv1 and
    layer1-3 keep the checkpoint's weights exactly, layer4 and the new classifier move."""
    torch.manual_seed(7)
    kinetics = build_target("resnet3d_10", 400).state_dict()
    path = tmp_path / "resnet-10-kinetics.pth"
    torch.save({"arch": "resnet-10", "state_dict": {f"module.{k}": v for k, v in kinetics.items()}}, path)
    cfg = load_config(config, ["run.name=ft", f"model.pretrained={path}", "model.ft_begin_index=4",
                               "model.shortcut=A", "optim.lr=0.5", "optim.schedule=multistep"])
    train(cfg)
    final = torch.load(cfg.run_dir() / "checkpoints" / "final.pt", weights_only=True)["state_dict"]
    parameters = [k for k in final if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    frozen = [k for k in parameters if not k.startswith(("layer4", "fc"))]
    assert frozen and all(torch.equal(final[k], kinetics[k]) for k in frozen)
    assert final["fc.weight"].shape[0] == 2
    assert not all(torch.equal(final[k], kinetics[k]) for k in parameters if k.startswith("layer4"))


def test_a_bad_pretrained_checkpoint_exits_2(config, tmp_path, capsys):
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    assert main(["--config", str(config), f"model.pretrained={tmp_path / 'bad.pth'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.pth" in err


def test_plateau_schedule_scales_every_group_and_restores():
    weights = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    cfg = OptimConfig(lr=0.1, schedule="plateau", plateau_patience=1, weight_decay=0)
    make = lambda: torch.optim.SGD([{"params": weights[:1]}, {"params": weights[1:], "lr": 0.0}], lr=cfg.lr)
    optimizer = make()
    schedule = build_scheduler(optimizer, cfg, epochs=10)
    for loss in (1.0, 0.9, 0.95, 0.95):  # two epochs without improvement: lr x 0.1
        schedule.step({"test/loss": loss})
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01) and optimizer.param_groups[1]["lr"] == 0.0
    restored = build_scheduler(make(), cfg, epochs=10)
    restored.load_state_dict(schedule.state_dict())
    assert restored.scheduler.best == 0.9 and restored.scheduler.num_bad_epochs == schedule.scheduler.num_bad_epochs
    with pytest.raises(ConfigError, match="plateau_metric"):  # a one-line error (exit 2)
        schedule.step({"train/loss": 1.0})
