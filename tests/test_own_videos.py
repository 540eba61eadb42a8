"""Your own videos: tools/preprocess_video.py --layout folders on a plain <root>/<class>/<video> tree of tiny
real videos written here, split by a per-class test fraction or by list files; the store carries the data
set's own name and the frames reader reads it."""
from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from pipelines.datasets.video import VIDEO_READERS
from pipelines.frame_store import FAILED, TEST, TRAIN, UNUSED, FrameStore
from tools import preprocess_video
from tools.synthetic_videos import render_frames, write_video

CLASSES = ["jump", "run", "walk"]


def video_tree(root: Path, per_class: int = 4) -> Path:
    """<root>/<class>/clip<j>.{avi,mp4}: 10-frame 32x24 videos; run/clip1.avi is broken (text)."""
    for i, name in enumerate(CLASSES):
        for j in range(per_class):
            codec, suffix = ("libx264", ".mp4") if j == 2 else ("mpeg4", ".avi")
            write_video(root / name / f"clip{j}{suffix}", render_frames(10, 32, 24, seed=10 * i + j), codec=codec)
    (root / "run" / "clip1.avi").write_text("not a video\n")
    (root / "walk" / ".DS_Store").write_bytes(b"\0")  # hidden: ignored
    return root


def preprocess(root: Path, out: Path, *extra: str) -> int:
    return preprocess_video.main(["--dataset", "mydata", "--layout", "folders", "--root", str(root), "--out",
                                  str(out), "--short-side", "24", "--clip-length", "4", "--workers", "1",
                                  "--no-progress", *extra])


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return video_tree(tmp_path_factory.mktemp("own") / "videos")


def split_of(store: Path) -> dict[str, int]:
    t = FrameStore(store).table
    assert all((t.splits[:, 0:1] == t.splits).all(axis=1))  # one split, the same in folds 1-3
    return dict(zip(t.names, t.splits[:, 0].tolist()))


def test_test_fraction_split_is_per_class_and_the_same_every_time(tree, tmp_path):
    assert preprocess(tree, tmp_path / "a.h5", "--test-fraction", "0.5") == preprocess_video.EXIT_FAILURES
    store = FrameStore(tmp_path / "a.h5")
    t = store.table
    assert t.attrs["dataset"] == "mydata" and t.classes == CLASSES and len(t.names) == 12
    assert t.status[t.names.index("run/clip1")] == FAILED  # the broken video cost itself only
    splits = split_of(tmp_path / "a.h5")
    for name in CLASSES:  # 2 of 4 held out per class, whatever the other classes hold
        flags = [splits[f"{name}/clip{j}"] for j in range(4)]
        if name == "run":
            assert flags[1] == UNUSED and sorted(flags[:1] + flags[2:]).count(TEST) in (1, 2)
        else:
            assert sorted(flags) == [TRAIN, TRAIN, TEST, TEST]
    assert [t.labels[i] for i in range(12)] == [CLASSES.index(n.split("/")[0]) for n in t.names]

    assert preprocess(tree, tmp_path / "b.h5", "--test-fraction", "0.5") == preprocess_video.EXIT_FAILURES
    assert split_of(tmp_path / "b.h5") == splits  # deterministic

    train = VIDEO_READERS["frames"](types.SimpleNamespace(root=tmp_path / "a.h5", split=1), "train")
    test = VIDEO_READERS["frames"](types.SimpleNamespace(root=tmp_path / "a.h5", split=1), "test")
    assert train.name == "mydata" and train.class_names == CLASSES
    assert len(train) + len(test) == 11 and np.all(train.frame_counts == 10)


def test_list_files_split_and_bad_lists_are_one_line(tree, tmp_path, capsys):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("jump/clip0.avi\njump/clip1\nrun/clip0.avi 2\nwalk/clip2.mp4\n\n")
    (lists / "test.txt").write_text("jump/clip2.mp4\nrun/clip2\nwalk/clip3.avi\n")
    given = ["--train-list", str(lists / "train.txt"), "--test-list", str(lists / "test.txt")]
    assert preprocess(tree, tmp_path / "l.h5", *given) == preprocess_video.EXIT_OK  # run/clip1 is in no list
    splits = split_of(tmp_path / "l.h5")
    assert {k for k, v in splits.items() if v == TRAIN} == {"jump/clip0", "jump/clip1", "run/clip0", "walk/clip2"}
    assert {k for k, v in splits.items() if v == TEST} == {"jump/clip2", "run/clip2", "walk/clip3"}
    assert len(splits) == 7  # the videos in neither list are left out

    capsys.readouterr()
    (lists / "test.txt").write_text("jump/clip9.avi\n")
    assert preprocess(tree, tmp_path / "x.h5", *given) == preprocess_video.EXIT_BAD_INPUT
    (lists / "test.txt").write_text("jump/clip0\n")
    assert preprocess(tree, tmp_path / "x.h5", *given) == preprocess_video.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {lists / 'test.txt'}: 'jump/clip9.avi' is not a video under the root (<class>/<video>)",
                   f"error: {lists / 'test.txt'}: 'jump/clip0' is also in {lists / 'train.txt'}"]


def test_bad_trees_and_arguments(tmp_path, capsys):
    root = video_tree(tmp_path / "videos", per_class=2)
    (root / "walk" / "notes.txt").write_text("x")
    assert preprocess(root, tmp_path / "x.h5") == preprocess_video.EXIT_BAD_INPUT
    (root / "walk" / "notes.txt").unlink()
    (root / "fly").mkdir()
    assert preprocess(root, tmp_path / "x.h5") == preprocess_video.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"error: {root / 'walk' / 'notes.txt'}: not a video by its suffix")
    assert err[1].startswith(f"error: {root / 'fly'}: no videos")
    with pytest.raises(SystemExit) as exit_:  # an unknown name needs its layout
        preprocess_video.main(["--dataset", "mydata", "--root", str(root), "--out", str(tmp_path / "x.h5")])
    assert exit_.value.code == 2 and "--layout" in capsys.readouterr().err


def test_shipped_config_trains_and_predicts_a_video_folder(tree, tmp_path, capsys):
    """configs/custom/video_folder.yaml on the store (tiny clips, one epoch); the run is named after the
    data set, and engine.predict on the class folders goes on past the broken video."""
    from accelerate.state import AcceleratorState, GradientState
    import torch
    from engine import predict as predict_module
    from engine.config import load_config
    from engine.trainer import train
    store = tmp_path / "mydata.h5"
    assert preprocess(tree, store, "--test-fraction", "0.5") == preprocess_video.EXIT_FAILURES
    config = tmp_path / "video_folder.yaml"
    config.write_text((Path(__file__).parents[1] / "configs/custom/video_folder.yaml").read_text())
    cfg = load_config(config, [f"data.root={store}", "data.clip_length=4", "data.sample_size=16", "data.views=2",
                               "data.batch_size=8", "data.eval_batch_size=8", "data.workers=0",
                               "data.loader=torch", "model.target=resnet3d_10", "train.epochs=1",
                               "train.progress=false", f"run.root={tmp_path / 'runs'}"])
    try:
        capsys.readouterr()
        summary = train(cfg)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    assert f"resnet3d_10 on mydata (" in capsys.readouterr().out
    assert summary["epochs"] == 1 and "test/video_top1" in summary["final"] and summary["dataset"] == "mydata"
    final = cfg.run_dir() / "checkpoints" / "final.pt"
    assert torch.load(final, weights_only=True)["class_names"] == CLASSES

    status = predict_module.main(["--checkpoint", str(final), str(tree), "--short-side", "24"])
    out, err = capsys.readouterr()
    assert status == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {tree / 'run' / 'clip1.avi'}: not a video PyAV can decode")
    videos = sorted(str(p) for p in tree.rglob("clip*") if p.name != "clip1.avi" or p.parent.name != "run")
    assert [line.split(": ")[0] for line in out.strip().splitlines()] == videos
