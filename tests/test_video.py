"""Video: tools/preprocess_video.py -> frame store -> clip loaders (DALI and torch), on tiny real videos."""
from __future__ import annotations

import io
import math
import multiprocessing
import shutil
import subprocess
import sys
import types
from pathlib import Path

import av
import h5py
import numpy as np
import pytest
import torch
from PIL import Image

import nvidia.dali  # noqa: F401  a pinned dependency: its absence must fail, not skip

from pipelines import video_frames
from pipelines.datasets.video import VIDEO_READERS
from pipelines.frame_store import FAILED, OK, SHORT, TEST, TRAIN, UNUSED, FrameStore
from pipelines.loaders import build_clip_loader
from pipelines.plan import ClipPlan
from pipelines.render import render_clip
from pipelines.views import CLIP_EVAL_VIEWS, ClipViewSet, clip_frame_indices
from tests.conftest import ROOT
from tools import preprocess_video
from tools.synthetic_videos import render_frames, write_hmdb51, write_ucf101, write_video

CPU = torch.device("cpu")
T = 8  # clip length in these tests (16 in the configs)
VIEWS = ClipViewSet(count=50, size=32)
BROKEN = {"Alpha/v_Alpha_g04_c01": "truncated", "Beta/v_Beta_g04_c01": "empty", "Beta/v_Beta_g05_c01": "text"}


def ucf_tree(root: Path) -> Path:
    """2 classes x 5 groups of 64x48 MPEG-4 AVIs (24 frames), with one short video, one odd-size
    H.264 MP4 and three broken files in place of some of them."""
    write_ucf101(root, ["Alpha", "Beta"], per_class=5, frames=24)
    write_video(root / "Alpha/v_Alpha_g02_c01.avi", render_frames(6, 64, 48, seed=5))  # shorter than a clip
    (root / "Beta/v_Beta_g02_c01.avi").unlink()
    write_video(root / "Beta/v_Beta_g02_c01.mp4", render_frames(30, 67, 49, seed=6), codec="libx264",
                pix_fmt="yuv444p")  # odd size: 4:4:4 (x264 needs even sizes for 4:2:0)
    good = (root / "Alpha/v_Alpha_g05_c01.avi").read_bytes()
    (root / "Alpha/v_Alpha_g04_c01.avi").write_bytes(good[: len(good) // 2])
    (root / "Beta/v_Beta_g04_c01.avi").write_bytes(b"")
    (root / "Beta/v_Beta_g05_c01.avi").write_text("not a video\n")
    return root


def preprocess(root: Path, out: Path, dataset="ucf101", workers=2, extra=()) -> int:
    return preprocess_video.main(["--dataset", dataset, "--root", str(root), "--out", str(out), "--short-side", "48",
                                  "--clip-length", str(T), "--workers", str(workers), "--no-progress", *extra])


@pytest.fixture(scope="module")
def ucf(tmp_path_factory):
    base = tmp_path_factory.mktemp("ucf")
    root = ucf_tree(base / "UCF-101")
    status = preprocess(root, base / "ucf101.h5")
    return types.SimpleNamespace(root=root, store=base / "ucf101.h5", status=status, base=base)


def decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def store_content(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        content = {name: f[name][...] for name in ("frames", "frame_offsets", "done")}
        content.update({f"videos/{k}": v[...] for k, v in f["videos"].items()})
        content.update({f"attr/{k}": v for k, v in f.attrs.items()})
    return content


def assert_same_content(a: Path, b: Path) -> None:
    ca, cb = store_content(a), store_content(b)
    assert ca.keys() == cb.keys()
    for key in ca:
        assert np.array_equal(ca[key], cb[key]), key


# ---------------------------------------------------------------- preprocessing

def test_preprocess_ucf101_counts_labels_splits_and_pixels(ucf):
    assert ucf.status == preprocess_video.EXIT_FAILURES  # finished, with failures
    store = FrameStore(ucf.store)
    t = store.table
    assert t.classes == ["Alpha", "Beta"] and len(t.names) == 10
    for row, name in enumerate(t.names):
        cls, video = name.split("/")
        group = int(video.split("_g")[1][:2])
        if name in BROKEN:
            assert t.status[row] == FAILED and t.frame_count[row] == 0 and t.errors[row]
            assert list(t.splits[row]) == [UNUSED] * 3
            continue
        assert t.labels[row] == ["Alpha", "Beta"].index(cls)
        assert list(t.splits[row]) == [TEST if group == k + 1 else TRAIN for k in range(3)]
        source = next((ucf.root / cls).glob(video + ".*"))
        original = decoded(source)
        assert t.frame_count[row] == len(original)  # what PyAV decodes
        assert t.status[row] == (SHORT if len(original) < T else OK)
        assert (t.width[row], t.height[row]) == (original.shape[2], original.shape[1])
        frames = [np.asarray(Image.open(io.BytesIO(store.frame_jpeg(row, i).tobytes())).convert("RGB"))
                  for i in range(len(original))]
        if original.shape[1:3] == (48, 64):  # stored at its own size: compare pixels
            mse = np.mean((np.stack(frames).astype(np.float64) - original) ** 2)
            assert 10 * np.log10(255 ** 2 / mse) > 30
        else:  # 67x49 H.264: shorter side 48
            assert frames[0].shape == (48, 66, 3)
    assert abs(t.fps[0] - 25) < 1e-6


def test_broken_videos_reported_and_rerun_is_a_no_op(ucf, capsys):
    assert preprocess(ucf.root, ucf.store) == preprocess_video.EXIT_FAILURES
    out = capsys.readouterr().out
    assert "already complete" in out and "3 failed" in out
    for name in BROKEN:
        assert f"failed video: {name}:" in out
    assert "short video (kept, loop-padded): Alpha/v_Alpha_g02_c01: 6 frames" in out


@pytest.mark.parametrize("sig, workers, status", [("SIGKILL", 1, -9), ("SIGTERM", 2, preprocess_video.EXIT_INTERRUPTED)])
def test_killed_run_resumes_to_the_same_content(ucf, tmp_path, sig, workers, status):
    """Kill the job (SIGKILL: no cleanup; SIGTERM: stops like Ctrl-C) after 4 videos are stored;
    the rerun decodes only the rest."""
    out = tmp_path / "ucf101.h5"
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
from pipelines import frame_store
from tools import preprocess_video
calls = [0]
real = frame_store.append_video
def append_then_die(*args):
    calls[0] += 1
    if calls[0] == 5:
        os.kill(os.getpid(), signal.{sig})
    return real(*args)
frame_store.append_video = append_then_die
sys.exit(preprocess_video.main(["--dataset", "ucf101", "--root", {str(ucf.root)!r}, "--out", {str(out)!r},
                                "--short-side", "48", "--clip-length", "{T}", "--workers", "{workers}", "--no-progress"]))
"""
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert killed.returncode == status, killed.stderr
    if sig == "SIGTERM":
        assert killed.stderr.strip().splitlines() == [f"interrupted: run the same command again to resume {out}"]
    partial = out.with_name(f".{out.stem}.partial.h5")
    assert not out.exists() and partial.exists()  # never the final name while partial
    with h5py.File(partial, "r") as f:
        assert f["done"][...].sum() == 4
    resumed = subprocess.run([sys.executable, "-m", "tools.preprocess_video", "--dataset", "ucf101", "--root",
                              str(ucf.root), "--out", str(out), "--short-side", "48", "--clip-length", str(T),
                              "--workers", "2", "--no-progress"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert resumed.returncode == preprocess_video.EXIT_FAILURES, resumed.stderr
    assert "4 already stored" in resumed.stdout
    assert not partial.exists()
    assert_same_content(out, ucf.store)


def test_a_decoder_process_that_dies_fails_only_its_video(tmp_path):
    """One video kills the process decoding it (as a decoder segfault or the OOM killer would), one
    listed video is missing: both reported, every other video stored, the job finishes."""
    root = tmp_path / "UCF-101"
    write_ucf101(root, ["Alpha", "Beta"], per_class=4, frames=T, size=(32, 24))
    (root / "Beta/v_Beta_g01_c01.avi").unlink()
    out = tmp_path / "ucf101.h5"
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
from pipelines import video_frames
from tools import preprocess_video
real = video_frames._convert_video
def crash_on_one(path, *args):
    if path.endswith("v_Alpha_g02_c01.avi"):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path, *args)
video_frames._convert_video = crash_on_one
sys.exit(preprocess_video.main(["--dataset", "ucf101", "--root", {str(root)!r}, "--out", {str(out)!r},
                                "--clip-length", "{T}", "--workers", "2", "--no-progress"]))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == preprocess_video.EXIT_FAILURES, run.stderr
    assert "failed video: Alpha/v_Alpha_g02_c01: decoder process died (signal 9 (SIGKILL))" in run.stdout
    assert "failed video: Beta/v_Beta_g01_c01: FileNotFoundError: not found on disk" in run.stdout
    assert "6 videos stored, 2 failed" in run.stdout
    t = FrameStore(out).table
    assert [n for n, s in zip(t.names, t.status) if s == FAILED] == ["Alpha/v_Alpha_g02_c01", "Beta/v_Beta_g01_c01"]
    assert all(count == T for count, s in zip(t.frame_count, t.status) if s != FAILED)


def test_jpeg_folder_tree_converts_to_the_same_store(ucf, tmp_path):
    """3D-ResNets-PyTorch layout: <class>/<video>/image_00001.jpg; frames already at the stored size
    keep their bytes, so exporting a store and converting it back gives the same frames."""
    store = FrameStore(ucf.store)
    root = tmp_path / "jpg"
    shutil.copytree(ucf.root / "ucfTrainTestlist", root / "ucfTrainTestlist")
    for row, name in enumerate(store.table.names):
        for i in range(int(store.table.frame_count[row])):
            (root / name).mkdir(parents=True, exist_ok=True)
            (root / name / f"image_{i + 1:05d}.jpg").write_bytes(store.frame_jpeg(row, i).tobytes())
    out = tmp_path / "ucf101.h5"
    assert preprocess(root, out, workers=1) == preprocess_video.EXIT_FAILURES  # the broken ones have no folder
    a, b = store_content(out), store_content(ucf.store)
    for key in ("frames", "frame_offsets", "videos/frame_count", "videos/label", "videos/splits", "videos/status"):
        assert np.array_equal(a[key], b[key]), key


def test_jpeg_folder_at_another_size_is_resized(tmp_path):
    frames = render_frames(3, 96, 72, seed=2)
    for i, frame in enumerate(frames):
        (tmp_path / "v").mkdir(exist_ok=True)
        Image.fromarray(frame).save(tmp_path / f"v/image_{i + 1:05d}.jpg", quality=95)
    result = video_frames.convert((str(tmp_path / "v"), 48, 3, 1))
    assert not result.error and len(result.sizes) == 3 and (result.width, result.height) == (96, 72)
    ends = np.cumsum(result.sizes)
    for frame, start, end in zip(frames, ends - result.sizes, ends):
        stored = np.asarray(Image.open(io.BytesIO(result.blob[start:end])).convert("RGB")).astype(np.float64)
        original = np.asarray(Image.fromarray(frame).resize((64, 48), Image.BOX))
        assert stored.shape == (48, 64, 3) and 10 * np.log10(255 ** 2 / np.mean((stored - original) ** 2)) > 30


def test_hmdb51_layout(tmp_path):
    root = tmp_path / "hmdb51"
    write_hmdb51(root, ["brush_hair", "cartwheel"], per_class=4, frames=10, size=(48, 40))
    write_video(root / "cartwheel/cartwheel_clip_2.avi", render_frames(10, 48, 40, seed=9), fps=30)  # as HMDB-51 ships
    assert preprocess(root, tmp_path / "hmdb51.h5", dataset="hmdb51", workers=1) == preprocess_video.EXIT_OK
    t = FrameStore(tmp_path / "hmdb51.h5").table
    assert t.fps[t.names.index("cartwheel/cartwheel_clip_2")] == 30
    assert t.classes == ["brush_hair", "cartwheel"]
    assert t.names[:4] == [f"brush_hair/brush_hair_clip_{j}" for j in range(4)]
    for row in range(len(t.names)):
        j = int(t.names[row].rsplit("_", 1)[1])
        assert t.labels[row] == row // 4 and t.frame_count[row] == 10
        assert list(t.splits[row]) == [0 if j == 3 else TEST if j % 3 == k else TRAIN for k in range(3)]
    cfg = types.SimpleNamespace(root=tmp_path, split=2)
    test = VIDEO_READERS["hmdb51"](cfg, "test")
    assert [t.names[r] for r in test.rows] == ["brush_hair/brush_hair_clip_1", "cartwheel/cartwheel_clip_1"]


def test_progress_lines_in_a_log(tmp_path, capsys, monkeypatch):
    """Not on a terminal: plain lines (videos/s, frames/s, ETA) instead of a bar, and a last one."""
    monkeypatch.setattr(preprocess_video, "LOG_EVERY_S", 0)
    root = tmp_path / "hmdb51"
    write_hmdb51(root, ["brush_hair"], per_class=3, frames=4, size=(32, 24))
    assert preprocess_video.main(["--dataset", "hmdb51", "--root", str(root), "--out", str(tmp_path / "x.h5"),
                                  "--workers", "1"]) == preprocess_video.EXIT_OK
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("preprocess: ")]
    assert lines[0].startswith("preprocess: 1/3 videos, ") and "frames/s, ETA " in lines[0], lines
    assert lines[-1].startswith("preprocess: 3 videos decoded in ") and lines[-1].endswith(" frames/s"), lines


def _break_ucf_testlist(root: Path) -> str:
    (root / "ucfTrainTestlist/testlist02.txt").unlink()
    return "split file " + str(root / "ucfTrainTestlist/testlist02.txt") + " not found"


def _break_ucf_classes(root: Path) -> str:
    (root / "ucfTrainTestlist/classInd.txt").write_text("1 Alpha\n2\n")
    return "classInd.txt, line 2: '2' is not '<index> <Class>'"


def _break_hmdb_flag(root: Path) -> str:
    (root / "testTrainMulti_7030_splits/brush_hair_test_split3.txt").write_text("brush_hair_clip_0.avi train\n")
    return "brush_hair_test_split3.txt, line 1: 'brush_hair_clip_0.avi train' is not '<video>.avi <0|1|2>'"


@pytest.mark.parametrize("dataset, damage", [("ucf101", _break_ucf_testlist), ("ucf101", _break_ucf_classes),
                                             ("hmdb51", _break_hmdb_flag)])
def test_bad_split_file_is_one_line(tmp_path, capsys, dataset, damage):
    root = tmp_path / dataset
    if dataset == "ucf101":
        write_ucf101(root, ["Alpha"], per_class=1, frames=4)
    else:
        write_hmdb51(root, ["brush_hair"], per_class=1, frames=4)
    expected = damage(root)
    assert preprocess(root, tmp_path / "x.h5", dataset=dataset) == preprocess_video.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expected in err, err
    assert not (tmp_path / "x.h5").exists()


def _read_in_child(store: FrameStore, row: int, frame: int) -> bytes:
    return store.frame_jpeg(row, frame).tobytes()


def test_forked_worker_reads_the_store(ucf):
    store = FrameStore(ucf.store)
    want = store.frame_jpeg(0, 3).tobytes()  # the parent's handle is open now: the child must not reuse it
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply(_read_in_child, (store, 0, 3)) == want
        assert pool.apply(_read_in_child, (store, 1, 5)) == store.frame_jpeg(1, 5).tobytes()


# ---------------------------------------------------------------- clips and loaders

@pytest.fixture(scope="module")
def train_set(ucf):
    return VIDEO_READERS["ucf101"](types.SimpleNamespace(root=ucf.base, split=1), "train")


def test_clip_is_one_crop_and_flip_of_consecutive_frames(train_set):
    short = train_set.frame_counts.tolist().index(6)
    for index, view, start in [(0, 13, 5), (short, 7, 0), (1, 0, 0)]:
        clip = render_clip(train_set, index, view, start, T, VIEWS)
        assert clip.shape == (T, 32, 32, 3) and clip.dtype == np.uint8
        frames = clip_frame_indices(int(train_set.frame_counts[index]), start, T)
        box = VIEWS.crop_box(view, *train_set.frame_size(index))
        for t, f in enumerate(frames):
            img = Image.open(io.BytesIO(train_set.clip_jpegs(index, np.array([f]))[0].tobytes())).convert("RGB")
            want = np.asarray(img.crop(box).resize((32, 32), Image.BILINEAR))  # 3D-ResNets-PyTorch's crop + resize
            want = want[:, ::-1] if VIEWS.flip(view) else want
            diff = np.abs(clip[t].astype(int) - want)
            assert diff.max() <= 2 and diff.mean() < 0.05, (index, view, t)  # torch's uint8 resize kernel vs PIL's
    assert list(clip_frame_indices(6, 0, T)) == [0, 1, 2, 3, 4, 5, 0, 1]  # loop padding
    assert list(clip_frame_indices(20, 16, 8)) == [16, 17, 18, 19, 16, 17, 18, 19]
    assert VIEWS.crop_box(0, 48, 64) == (8, 0, 56, 48) and VIEWS.crop_box(9, 48, 64) == (16, 0, 64, 48)
    assert VIEWS.crop_box(19, 48, 64) == (24, 8, 64, 48) and VIEWS.flip(19)  # scale 2^-1/4, bottom right


@pytest.mark.parametrize("cuda_started", [False, True], ids=["fork", "spawn"])
def test_dali_and_torch_clip_loaders_agree(train_set, cuda_started, monkeypatch):
    """Also with spawned DALI workers: a process with a CUDA context (faked here) cannot fork them."""
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: cuda_started)
    plan = ClipPlan(tuple(train_set.frame_counts.tolist()), T, batch_size=3, train=True, view_count=VIEWS.count)
    dali = build_clip_loader("dali", train_set, VIEWS, plan, CPU, workers=2)
    assert dali.pipe.py_start_method == ("spawn" if cuda_started else "fork")
    torch_loader = build_clip_loader("torch", train_set, VIEWS, plan, CPU, workers=0)
    for epoch in (0, 3):  # a later epoch: the workers follow the epoch the loader announces
        got, want = list(dali.epoch(epoch)), list(torch_loader.epoch(epoch))
        assert len(got) == len(want) == len(plan(epoch))
        for a, b, planned in zip(got, want, plan(epoch)):
            assert a["image"].shape == (len(planned.indices), 3, T, 32, 32) and a["image"].dtype == torch.uint8
            for key in ("index", "view", "start", "label", "video"):
                assert torch.equal(a[key], b[key]), key
            assert a["index"].tolist() == planned.indices.tolist() and a["start"].tolist() == planned.starts.tolist()
            diff = (a["image"].int() - b["image"].int()).abs()
            assert diff.max() <= 1  # same resize (render.resize_clip); decoders: DALI's libjpeg-turbo vs PIL's
    dali.close()


def test_packed_jpegs_cut_back_to_the_exact_byte_strings():
    from nvidia.dali import Pipeline, fn, types as dali_types
    from pipelines.dali_clips import pack_bytes
    blobs = [np.frombuffer(b, np.uint8) for b in (b"\xff\xd8abc", b"x", b"0123456789")]
    packed, lengths = pack_bytes(blobs)
    assert packed.shape == (3, 10) and lengths.tolist() == [[5], [1], [10]]
    pipe = Pipeline(batch_size=3, num_threads=1, device_id=None)
    with pipe:
        data, size = fn.external_source(source=lambda: (packed, lengths), num_outputs=2, batch=True,
                                        dtype=[dali_types.UINT8, dali_types.INT32])
        pipe.set_outputs(fn.slice(data, start=[0], shape=size, axes=[0]))  # as the clip loader's graph
    pipe.build()
    (out,) = pipe.run()
    assert [np.asarray(out[i]).tobytes() for i in range(3)] == [b.tobytes() for b in blobs]


def test_eval_clips_cover_every_frame_once_across_two_processes(ucf):
    test_set = VIDEO_READERS["ucf101"](types.SimpleNamespace(root=ucf.base, split=1), "test")
    counts = tuple(test_set.frame_counts.tolist())
    covered = {}
    for rank in range(2):
        plan = ClipPlan(counts, T, batch_size=2, train=False, rank=rank, world=2)
        loader = build_clip_loader("dali", test_set, CLIP_EVAL_VIEWS, plan, CPU, workers=1)
        want = list(build_clip_loader("torch", test_set, CLIP_EVAL_VIEWS, plan, CPU, workers=0).epoch(0))
        for a, b in zip(loader.epoch(0), want, strict=True):
            assert (a["image"].int() - b["image"].int()).abs().max() <= 1
            assert torch.equal(a["video"], a["index"]) and torch.equal(a["view"], torch.zeros_like(a["view"]))
            for video, start in zip(a["video"].tolist(), a["start"].tolist()):
                for f in range(start, min(start + T, counts[video])):
                    covered[(video, f)] = covered.get((video, f), 0) + 1
        loader.close()
    # every frame once, but a lone last frame (n = 1 mod T), which the reference's test clips leave out too
    assert covered == {(v, f): 1 for v, n in enumerate(counts) for f in range(n - (n > 1 and n % T == 1))}


def test_eval_clip_starts_are_the_references():
    """3D_SSKT/datasets/ucf101.py: `for j in range(1, n_frames, step)` over 1-based frames, step the clip
    length for the test clips (n_samples 0) and max(1, ceil((n - 1 - length) / (k - 1))) for k validation
    clips; here 0-based. The one deviation: a one-frame video, which the reference drops, gets one clip."""
    for length in (8, 16):
        for n in range(1, 70):
            for k in (0, 3):
                step = length if k == 0 else max(1, math.ceil((n - 1 - length) / (k - 1)))
                reference = [j - 1 for j in range(1, n, step)] or [0]
                plan = ClipPlan((n,), length, batch_size=64, train=False, eval_clips=k)
                assert [s for b in plan(0) for s in b.starts.tolist()] == reference, (length, n, k)


def test_train_plan_splits_clips_between_two_processes():
    counts = tuple(range(5, 42))
    for epoch in range(3):
        shards = [ClipPlan(counts, 16, 8, True, 50, seed=1, rank=r, world=2)(epoch) for r in range(2)]
        assert len(shards[0]) == len(shards[1])
        seen = [i for shard in shards for b in shard for i in b.indices.tolist()]
        assert len(seen) == len(set(seen)) == 36  # 37 videos: 4 global batches of 8, then 5 -> 2 + 2
        full = [ClipPlan(counts, 16, 8, True, 50, seed=1, rank=r, world=2, drop_last=True)(epoch) for r in range(2)]
        assert sum(len(b.indices) for shard in full for b in shard) == 32  # drop_last: the ragged 5 left out
        for shard in full:
            assert all(len(b.indices) == 4 for b in shard)  # one step shape
            for b in shard:
                assert all(0 <= s <= max(0, counts[i] - 16) for i, s in zip(b.indices, b.starts))
                assert b.views.max() < 50


def test_video_readers_errors_and_auto_loader(train_set, tmp_path):
    from pipelines.datasets import DatasetError
    from pipelines.dali_clips import DaliClipLoader
    for name, lists in (("ucf101", "UCF101TrainTestSplits"), ("hmdb51", "test_train_splits")):
        with pytest.raises(DatasetError) as missing:
            VIDEO_READERS[name](types.SimpleNamespace(root=tmp_path, split=1), "train")
        message = str(missing.value)  # one line: where the videos come from and how the store is built
        assert "\n" not in message and f"{name}.h5 not found" in message and lists in message
        assert f"`make preprocess-video DATASET={name} ROOT=<that folder> OUT={tmp_path / name}.h5`" in message
    plan = ClipPlan(tuple(train_set.frame_counts.tolist()), T, 2)
    auto = build_clip_loader("auto", train_set, VIEWS, plan, CPU, workers=1)
    assert isinstance(auto, DaliClipLoader)
    auto.close()
    with pytest.raises(ValueError, match=r"'resident' has no clip loader \(.*\); clips load with auto, dali, torch"):
        build_clip_loader("resident", train_set, VIEWS, plan, CPU)


def test_auto_takes_the_torch_loaders_where_dali_is_not_installed(train_set, monkeypatch, capsys, request):
    """DALI has Linux wheels only (and the GPU image here lacks it): `auto` falls back to torch, saying so once."""
    import importlib.util
    from pipelines import loaders
    from pipelines.torch_clips import TorchClipLoader
    find_spec = importlib.util.find_spec
    no_nvidia = lambda name, *args: None if name.startswith("nvidia") else find_spec(name, *args)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", no_nvidia)
    loaders.dali_installed.cache_clear()
    request.addfinalizer(loaders.dali_installed.cache_clear)  # the rest of the suite sees DALI again, even on failure
    plan = ClipPlan(tuple(train_set.frame_counts.tolist()), T, 2)
    assert isinstance(build_clip_loader("auto", train_set, VIEWS, plan, CPU, workers=0), TorchClipLoader)
    files = types.SimpleNamespace(images=None)  # an image set of encoded files
    assert loaders.choose_loader(files, torch.device("cuda")) == "torch"
    assert capsys.readouterr().out.count("NVIDIA DALI is not installed, so the torch loaders") == 1
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    loaders.dali_installed.cache_clear()
    assert loaders.choose_loader(files, torch.device("cuda")) == "dali" and loaders.choose_clip_loader() == "dali"


@pytest.mark.parametrize("crop", [38, 45, 64, 90, 128])
def test_mirroring_commutes_exactly_with_the_clip_resize(crop):
    """The DALI clip loader mirrors the crops before resize_clip, render_clip after it: the same pixels."""
    from pipelines.render import resize_clip
    frames = torch.randint(0, 256, (4, crop, crop, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(crop))
    assert torch.equal(resize_clip(frames.flip(2), 112, flip=False), resize_clip(frames, 112, flip=True))
