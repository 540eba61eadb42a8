"""The offline video demo's data: procedural motion videos -> UCF-101 layout -> frame store."""
from __future__ import annotations

import hashlib
import io
import json
import types
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from engine.config import load_config
from engine.trainer import train
from pipelines.datasets import procedural_video as pv
from pipelines.datasets.procedural import render
from pipelines.frame_store import OK, TEST, TRAIN, FrameStore
from pipelines.render import resize_clip
from tests.conftest import ROOT
from tests.test_video_train import reset
from tools import demo_video, preprocess_video
from tools.tables import cell_label, load_table

CLASSES = pv.CLASSES
GROUPS, CLIPS, FRAMES = 8, 2, 16  # 96 videos: enough to tell six motions apart, seconds to write


@pytest.fixture(scope="module")
def ucf(tmp_path_factory):
    base = tmp_path_factory.mktemp("procedural_video")
    root = pv.ensure_videos(base / "videos", groups=GROUPS, clips=CLIPS, frames=FRAMES)
    status = preprocess_video.main(["--dataset", "ucf101", "--root", str(root), "--out", str(base / "store.h5"),
                                    "--short-side", "32", "--clip-length", "8", "--workers", "1", "--no-progress"])
    return types.SimpleNamespace(base=base, root=root, store=base / "store.h5", status=status)


def test_generation_is_deterministic_by_seed(tmp_path):
    a, factors = pv.render_video(3, label=4, group=2, clip=1, frames=10)
    b, _ = pv.render_video(3, label=4, group=2, clip=1, frames=10)
    c, _ = pv.render_video(4, label=4, group=2, clip=1, frames=10)
    assert a.shape == (10, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(a[0], a[-1])  # it moves
    assert 0 <= factors["shape"] < len(pv.SHAPES)
    pv.write_avi(tmp_path / "a.avi", a)
    pv.write_avi(tmp_path / "b.avi", b)
    assert (tmp_path / "a.avi").read_bytes() == (tmp_path / "b.avi").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.avi", "b.avi"]  # no temporary file left


def test_each_action_has_its_own_actor_and_scene_mostly_not_always():
    """The shape and background kinds go with the class as designed: its own kind with probability own_shape
    (own_background), any other uniformly; the two together name the class often, never always."""
    assert sorted(pv.OWN_SHAPE) == sorted(pv.OWN_BACKGROUND) == sorted(CLASSES)
    assert sorted(pv.OWN_SHAPE.values()) == sorted(pv.SHAPES)  # every class its own kind
    assert sorted(pv.OWN_BACKGROUND.values()) == sorted(pv.BACKGROUNDS)
    n, opts = 600, {"own_shape": 0.75, "own_background": 0.5}
    drawn = {label: [pv.video_factors(0, label, group, 1, 2, **opts)[0] for group in range(n)]
             for label in range(len(CLASSES))}
    for label, name in enumerate(CLASSES):
        for key, kinds, own, share in (("shape", pv.SHAPES, pv.OWN_SHAPE[name], opts["own_shape"]),
                                       ("background", pv.BACKGROUNDS, pv.OWN_BACKGROUND[name], opts["own_background"])):
            frequency = np.bincount([f[key] for f in drawn[label]], minlength=len(kinds)) / n
            expected = np.full(len(kinds), (1 - share) / (len(kinds) - 1))
            expected[kinds.index(own)] = share
            assert np.abs(frequency - expected).max() < 0.06, (name, key, frequency.round(2))
    # The best guess of the class from the shape and background kinds alone, fitted on half the videos.
    def guess_accuracy(drawn):
        pairs = {label: [(f["shape"], f["background"]) for f in videos] for label, videos in drawn.items()}
        counts = np.zeros((len(CLASSES), len(pv.SHAPES), len(pv.BACKGROUNDS)))
        for label, videos in pairs.items():
            for shape, background in videos[: n // 2]:
                counts[label, shape, background] += 1
        guess = counts.argmax(0)
        return np.mean([guess[s, b] == label for label, videos in pairs.items() for s, b in videos[n // 2:]])
    informative = guess_accuracy(drawn)
    assert 0.6 < informative < 0.85, informative  # chance 1/6; the motion decides the rest
    independent = guess_accuracy({label: [pv.video_factors(0, label, group, 1, 2, own_shape=1 / 6,
                                                           own_background=1 / 6)[0] for group in range(n)]
                                  for label in range(len(CLASSES))})
    assert independent < 0.25, independent  # shares of 1/6: the kinds say nothing about the class


def test_a_fine_grained_actor_names_the_class_only_as_a_pair():
    """actor=shape_colour: a video shows one of its class's six (shape, colour) pairs ((shape + colour) % 6 ==
    the class) with probability own_shape, else one of the other thirty uniformly; the shape alone and the
    colour alone say nothing of the class, and the renderer draws the pair's colour."""
    n = 600
    for share in (0.9, 0.0):
        for label in range(len(CLASSES)):
            drawn = [pv.video_factors(0, label, group, 1, 2, actor="shape_colour", own_shape=share)
                     for group in range(n)]
            pairs = np.array([(f["shape"], f["colour"]) for f, _, _ in drawn])
            assert all(int(u[0, pv.U_COLOUR] * len(pv.COLOURS)) == f["colour"] for f, u, _ in drawn)
            owned = (pairs.sum(1) % len(CLASSES)) == label
            assert abs(owned.mean() - share) < 0.04, (label, share, owned.mean())
            for column in (0, 1):  # the shape, the colour: each uniform over its six kinds
                assert np.abs(np.bincount(pairs[:, column], minlength=6) / n - 1 / 6).max() < 0.06
            if share == 0:  # every other pair, about equally often
                counts = np.bincount(pairs[:, 0] * 6 + pairs[:, 1], minlength=36)
                assert (counts > 0).sum() == 30 and counts.max() < 2.5 * n / 30, counts
    with pytest.raises(ValueError, match="actor: expected one of shape, shape_colour, got 'colour'"):
        pv.options(actor="colour")


def test_a_group_look_is_one_look_per_group_as_a_ucf101_group():
    """group_look: a group's clips share their actor, colours, texture and background (the 2D draws other than
    the path), and differ in path and pixels; groups still draw their look with the design's shares; a bad
    value is one line."""
    for label in range(len(CLASSES)):
        a, ua, _ = pv.video_factors(0, label, 5, 1, 16, group_look=True)
        b, ub, _ = pv.video_factors(0, label, 5, 2, 16, group_look=True)
        other, uo, _ = pv.video_factors(0, label, 6, 1, 16, group_look=True)
        assert [a[k] for k in ("shape", "colour", "background")] == [b[k] for k in ("shape", "colour", "background")]
        path = [pv.U_CX, pv.U_CY, pv.U_RADIUS]
        fixed = [i for i in range(pv.N_UNIFORM) if i not in path]
        # frame 0's draws: the angle's turn over the clip is the clip's own
        assert np.array_equal(ua[0, fixed], ub[0, fixed]) and not np.array_equal(ua[0, fixed], uo[0, fixed])
        assert not np.allclose(ua[:, path], ub[:, path])  # the clips move differently
        pixels_a = pv.render_video(0, label, 5, 1, 16, group_look=True)[0]
        assert not np.array_equal(pixels_a, pv.render_video(0, label, 5, 2, 16, group_look=True)[0])
    n = 600
    shapes = [pv.video_factors(0, 0, group, 1, 2, group_look=True)[0]["shape"] for group in range(n)]
    assert abs(np.mean(np.array(shapes) == pv.SHAPES.index(pv.OWN_SHAPE[CLASSES[0]])) - 0.75) < 0.06
    per_clip = [pv.video_factors(0, 0, 1, clip, 2)[0]["shape"] for clip in range(1, 60)]
    assert len(set(per_clip)) > 1  # without it, one group's clips draw their looks apart
    assert pv.identity(pv.options(group_look=True)) != pv.identity(pv.options())
    with pytest.raises(ValueError, match="group_look: expected true or false, got 'yes'"):
        pv.options(group_look="yes")


# sha256 of render_video(0, label, 1, 1, 16)'s pixels for every label, with the default options.
PINNED_PIXELS = {2: "0fbd88a3c98cf6b71d4b81813544fd9a4b033c4359274491db3dcf830836c3eb"}


def test_pixels_are_pinned_to_the_generator_version():
    """The video set's folder is named by VERSION: changed pixels under the same VERSION would reuse old
    files. On failure: bump pv.VERSION and pin the new digest under it."""
    digest = hashlib.sha256()
    for label in range(len(CLASSES)):
        digest.update(pv.render_video(0, label, 1, 1, 16)[0].tobytes())
    assert PINNED_PIXELS.get(pv.VERSION) == digest.hexdigest(), f"pixels changed under VERSION {pv.VERSION}"


def test_subtle_motion_is_the_same_path_at_a_tenth_of_its_extent():
    """A share subtle_motion of the videos keep their path's form and mean at SUBTLE_EXTENT of its extent;
    the draw comes after the path's, so the same video with and without subtlety has the same path."""
    n, share = 600, 0.5
    subtle = [pv.video_factors(0, label, group, 1, 16, subtle_motion=share)[0]["subtle"]
              for label in range(len(CLASSES)) for group in range(n // len(CLASSES))]
    assert abs(np.mean(subtle) - share) < 0.06
    for label in range(len(CLASSES)):
        full = pv.video_factors(0, label, 1, 1, 16, subtle_motion=0)[0]
        small = pv.video_factors(0, label, 1, 1, 16, subtle_motion=1)[0]
        assert not full["subtle"] and small["subtle"] and full["shape"] == small["shape"]
        for key in ("cx", "cy", "radius"):
            assert np.allclose(small[key] - small[key].mean(), pv.SUBTLE_EXTENT * (full[key] - full[key].mean()))
            assert np.isclose(small[key].mean(), full[key].mean())
        moved = max(np.ptp(full[key]) for key in ("cx", "cy", "radius"))
        assert moved > 0.3 and max(np.ptp(small[key]) for key in ("cx", "cy", "radius")) < 0.1 * moved + 1e-6
    with pytest.raises(ValueError, match="subtle_motion: expected a share"):
        pv.options(subtle_motion=-0.1)


def test_upscale_keeps_the_rendered_frames_through_the_codec(tmp_path):
    """upscale k writes each rendered pixel as a k x k square and stores the frames at k x 32; resized back to
    32 as the clip loader resizes them, they are closer to the noise-free rendered frames than frames written
    at 32 (the codecs' 4:2:0 chroma and 8x8 blocks no longer straddle the shape's outline)."""
    pixels = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 3), dtype=np.uint8)
    big = pv.enlarge(pixels, 3)
    assert big.shape == (2, 9, 12, 3) and np.array_equal(big[:, 1::3, 2::3], pixels) and pv.enlarge(pixels, 1) is pixels
    opts = {"groups": 3, "clips": 1, "frames": 9}
    errors = {}
    for upscale in (1, 2):
        store = FrameStore(demo_video.prepare_store(tmp_path / f"x{upscale}.h5", workers=1, upscale=upscale, **opts))
        assert json.loads((tmp_path / f"x{upscale}.h5.identity").read_text())["short_side"] == 32 * upscale
        errors[upscale] = []
        for row, name in enumerate(store.table.names):
            stored = np.stack([jpeg_rgb(store, row, f) for f in range(9)])
            assert stored.shape == (9, 32 * upscale, 32 * upscale, 3)
            label, group, clip = pv.parse_name(name)
            u = pv.video_factors(0, label, group, clip, 9)[1]
            clean = render(u, np.zeros((9, 32, 32, 3), np.float32))
            resized = resize_clip(torch.from_numpy(stored), 32, False).numpy()
            errors[upscale].append(np.abs(resized - clean.astype(float)).mean())
    assert np.mean(errors[2]) < 0.85 * np.mean(errors[1]), errors  # measured: 11.3 against 15.3
    for bad in (0, 9):
        with pytest.raises(ValueError, match="upscale: expected an integer 1..8"):
            pv.options(upscale=bad)


def test_layout_and_split_files_are_ucf101s(ucf):
    lists = ucf.root / "ucfTrainTestlist"
    assert (lists / "classInd.txt").read_text().splitlines() == [f"{i + 1} {c}" for i, c in enumerate(CLASSES)]
    for k in (1, 2, 3):
        train = (lists / f"trainlist0{k}.txt").read_text().splitlines()
        test = (lists / f"testlist0{k}.txt").read_text().splitlines()
        assert len(train) + len(test) == len(CLASSES) * GROUPS * CLIPS
        for line in train:  # "Class/v_Class_gXX_cYY.avi <1-based class>"
            name, index = line.split()
            cls = name.split("/")[0]
            assert name == f"{cls}/v_{cls}_g{name[-10:-8]}_c{name[-6:-4]}.avi" and (ucf.root / name).is_file()
            assert int(index) == CLASSES.index(cls) + 1
            assert int(name[-10:-8]) not in pv.tested_groups(GROUPS, k)
        assert {int(n[-10:-8]) for n in test} == set(pv.tested_groups(GROUPS, k))
    assert list(pv.tested_groups(25, 1)) == list(range(1, 8)) and list(pv.tested_groups(25, 3)) == list(range(15, 22))
    entries, classes = preprocess_video.ucf101_entries(ucf.root, None)  # what the tool reads
    assert classes == CLASSES and len(entries) == len(CLASSES) * GROUPS * CLIPS
    assert all(e.source and e.source.endswith(".avi") for e in entries)
    with av.open(entries[0].source) as c:
        assert c.format.name == "avi" and c.streams.video[0].codec_context.name == "mpeg4"


def test_frame_store_counts_balance_and_pixels(ucf):
    assert ucf.status == preprocess_video.EXIT_OK
    store = FrameStore(ucf.store)
    t = store.table
    assert t.classes == CLASSES and len(t.names) == len(CLASSES) * GROUPS * CLIPS
    assert np.all(t.status == OK) and np.all(t.frame_count == FRAMES) and np.all(t.fps == pv.FPS)
    for k in range(3):
        for flag in (TRAIN, TEST):
            counts = np.bincount(t.labels[t.splits[:, k] == flag], minlength=len(CLASSES))
            assert len(set(counts)) == 1 and counts[0] > 0  # every class equally often in every split
    row = t.names.index("Orbit/v_Orbit_g03_c02")
    rendered, _ = pv.render_video(0, CLASSES.index("Orbit"), 3, 2, FRAMES)
    stored = np.stack([jpeg_rgb(store, row, f) for f in range(FRAMES)])
    assert stored.shape == rendered.shape
    error = np.abs(stored.astype(float) - rendered).mean()  # MPEG-4 (4:2:0) and JPEG smooth the pixel noise
    other, _ = pv.render_video(0, CLASSES.index("Orbit"), 4, 2, FRAMES)
    assert error < 20 and error < 0.5 * np.abs(stored.astype(float) - other).mean()


def test_motion_separates_the_classes_while_a_single_frame_does_not(ucf):
    store = FrameStore(ucf.store)
    t = store.table
    features = np.stack([motion_features(np.stack([jpeg_rgb(store, row, f) for f in range(FRAMES)]))
                         for row in range(len(t.names))])
    accuracy = np.mean([nearest_class_mean(features[train], t.labels[train], features[~train], t.labels[~train])
                        for train in (t.splits == TRAIN).T])  # the three official splits
    print(f"motion features: {accuracy:.2f}")
    assert accuracy >= 0.75, accuracy  # chance: 1/6
    # One frame: where the shape is and how big, taken from the generator itself (exact, no tracking
    # error), at a random moment of each of 600 videos: about chance.
    rng = np.random.default_rng(0)
    geometry, labels = [], []
    for label in range(len(CLASSES)):
        for i in range(100):
            path = pv.motion_path(label, FRAMES, np.random.default_rng([9, label, i]))
            f = rng.integers(FRAMES)
            geometry.append([path["cx"][f], path["cy"][f], path["radius"][f]])
            labels.append(label)
    geometry, labels = np.asarray(geometry), np.asarray(labels)
    fit = np.arange(len(labels)) % 4 != 0
    single = nearest_neighbours(geometry[fit], labels[fit], geometry[~fit], labels[~fit])
    print(f"single frame: {single:.2f}")
    assert single < 0.35, single


def test_rerun_finishes_an_interrupted_set_and_options_name_the_set(tmp_path):
    opts = {"groups": 3, "clips": 1, "frames": 4}
    root = pv.ensure_videos(tmp_path, **opts)
    first = {p: p.read_bytes() for p in sorted(root.rglob("*.avi"))}
    assert len(first) == len(CLASSES) * 3
    # An interrupted run: some videos missing, no completion marker.
    (root / pv.MARKER).unlink()
    for path in list(first)[::4]:
        path.unlink()
    assert pv.ensure_videos(tmp_path, **opts) == root
    assert {p: p.read_bytes() for p in sorted(root.rglob("*.avi"))} == first
    assert pv.ensure_videos(tmp_path, **{**opts, "seed": 1}) != root  # other options, other folder
    with pytest.raises(ValueError, match="unknown option 'fps'"):
        pv.options(fps=30)


def test_prepare_store_reuses_a_current_store_and_rebuilds_a_stale_one(tmp_path, monkeypatch):
    store = tmp_path / "demo" / "procedural_video.h5"
    calls = []
    real = preprocess_video.main
    monkeypatch.setattr(preprocess_video, "main", lambda argv: calls.append(argv) or real(argv))
    opts = {"groups": 3, "clips": 1, "frames": 9}
    assert demo_video.prepare_store(store, workers=1, **opts) == store
    assert FrameStore(store).table.frame_count.tolist() == [9] * len(CLASSES) * 3
    demo_video.prepare_store(store, workers=1, **opts)
    assert len(calls) == 1  # current: reused as is
    demo_video.prepare_store(store, workers=1, **{**opts, "seed": 5})
    assert len(calls) == 2  # other videos (same names and sizes possible): made again
    new = FrameStore(store)
    stored = jpeg_rgb(new, new.table.names.index("Rise/v_Rise_g01_c01"), 4).astype(float)
    assert np.abs(stored - pv.render_video(5, 0, 1, 1, 9)[0][4]).mean() < 0.5 * np.abs(
        stored - pv.render_video(0, 0, 1, 1, 9)[0][4]).mean()  # the new videos' pixels, not the old ones'


def test_the_config_names_the_data_seed_and_a_bad_option_is_one_line(tmp_path, capsys):
    """--prepare reads the generator's options, the data seed among them, from the config's data.procedural."""
    config = ROOT / "configs/demo/video_sskt.yaml"
    small = [f"data.root={tmp_path / 'seed3.h5'}", "data.procedural.seed=3", "data.procedural.groups=3",
             "data.procedural.clips=1", "data.procedural.frames=9"]
    assert demo_video.main(["--prepare", str(config), *small]) == 0
    opts = pv.options(**load_config(config, small).data.procedural)
    shares = {key: opts[key] for key in pv.DESIGN}
    assert opts["seed"] == 3 and opts["own_shape"] == load_config(config).data.procedural["own_shape"]
    stamp = json.loads((tmp_path / "seed3.h5.identity").read_text())
    assert stamp["videos"] == pv.identity(opts) != pv.identity({**opts, "seed": 0})
    store = FrameStore(tmp_path / "seed3.h5")
    stored = jpeg_rgb(store, store.table.names.index("Rise/v_Rise_g02_c01"), 4).astype(float)
    assert np.abs(stored - pv.render_video(3, 0, 2, 1, 9, **shares)[0][4]).mean() < \
        0.5 * np.abs(stored - pv.render_video(0, 0, 2, 1, 9, **shares)[0][4]).mean()
    capsys.readouterr()
    for override, message in (("data.procedural.fps=30", "data.procedural: unknown option 'fps'"),
                              ("data.procedural.own_shape=1.5", "data.procedural: own_shape: expected a share"),
                              ("data.procedural.clips=0", "data.procedural: clips: expected an integer 1..99")):
        assert demo_video.main(["--prepare", str(config), f"data.root={tmp_path / 'bad.h5'}", override]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "bad.h5").exists()


def test_the_demo_config_trains_on_a_tiny_prepared_set(tmp_path, source_checkpoint):
    """configs/demo/video_sskt.yaml as shipped, on 18 videos, 1 epoch, sources cached (stand-in weights)."""
    shipped = load_config(ROOT / "configs/demo/video_sskt.yaml").data.procedural
    store = demo_video.prepare_store(tmp_path / "procedural_video.h5", workers=1,
                                     **{**shipped, "groups": 3, "clips": 1, "frames": 16})
    cfg = load_config(ROOT / "configs/demo/video_sskt.yaml", [
        f"data.root={store}", "data.workers=0", "train.epochs=1", "train.progress=false",
        f"sources.0.weights={source_checkpoint}",
        f"source_cache.root={tmp_path / 'cache'}", f"run.root={tmp_path / 'runs'}"])
    try:
        summary = train(cfg)
    finally:
        reset()
    assert summary["metric"] == "test/video_top1" and summary["epochs"] == 1
    final = json.loads((cfg.run_dir() / "summary.json").read_text())["final"]
    assert final["test/videos"] == len(pv.CLASSES) and final["test/clips"] == len(pv.CLASSES) * 16 // 8
    assert 0 <= final["test/clip_top1"] <= 100 and 0 <= final["test/video_top1"] <= 100
    assert sorted(p.name for p in (tmp_path / "cache").iterdir())  # the sources' per-frame outputs were cached


def test_the_video_table_runs_the_demo_configs_on_one_set_of_videos():
    """tables/demo_video.yaml (make demo-video): scratch and SSKT cells on the same videos and budget, the frame
    store made from the config the Makefile prepares, in runs/demo/video_table/."""
    table = load_table("demo_video")
    cells = {cell_label(row, column): cell for row, column, cell in table.cells()}
    assert list(cells) == ["none / scratch", "none / DML", "linear heads / SSKT I", "linear heads / SSKT P+I"]
    assert table.metric == "test/video_top1" and table.baseline.column == "scratch" and table.layout == "cells"
    assert {cell.run_name for cell in cells.values()} == {
        f"demo/video_table/{name}" for name in ("scratch", "dml", "sskt_i_linear", "sskt_p_i_linear")}
    prepared = load_config(ROOT / "configs/demo/video_sskt.yaml")  # what `make demo-video-data` writes
    sources = {}
    for label, cell in cells.items():
        cfg = load_config(ROOT / cell.config, [*cell.overrides, "seed=2"])
        assert cfg.seed == 2 and cfg.data == prepared.data, label  # one frame store, one data protocol
        assert (cfg.optim, cfg.train, cfg.model.target) == (prepared.optim, prepared.train,
                                                             prepared.model.target), label
        sources[label] = [Path(s.weights).name for s in cfg.sources]
    assert sources == {"none / scratch": [], "none / DML": [], "linear heads / SSKT I": ["object.pt"],
                       "linear heads / SSKT P+I": ["scene.pt", "object.pt"]}
    make = (ROOT / "Makefile").read_text()
    recipe = make[make.index("\ndemo-video:"):].split("\n\n")[0]
    assert "tools.reproduce --table demo_video" in recipe and "tools.results --table demo_video" in recipe
    assert "demo-video-data" in recipe.splitlines()[1] and "VIDEO_CONFIG = " in make


# ---------------------------------------------------------------- helpers

def jpeg_rgb(store: FrameStore, row: int, frame: int) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(store.frame_jpeg(row, frame).tobytes())).convert("RGB"))


def motion_features(frames: np.ndarray) -> np.ndarray:
    """A trivial motion descriptor: track where the frames differ from the video's median frame (the
    static background, mostly; each frame's 75th percentile of that difference is its noise floor), then
    net vertical and horizontal displacement, path lengths (and whether both axes move), change of spread."""
    f = frames.astype(np.float32)
    difference = np.abs(f - np.median(f, axis=0)).sum(-1)
    weight = np.maximum(difference - np.percentile(difference, 75, axis=(1, 2), keepdims=True), 0)
    yy, xx = np.mgrid[0:f.shape[1], 0:f.shape[2]]
    total = weight.sum((1, 2)) + 1e-6
    cx, cy = (weight * xx).sum((1, 2)) / total, (weight * yy).sum((1, 2)) / total
    spread = np.sqrt((weight * ((xx - cx[:, None, None]) ** 2 + (yy - cy[:, None, None]) ** 2)).sum((1, 2)) / total)
    q = max(1, len(f) // 4)

    def net(a):
        return a[-q:].mean() - a[:q].mean()

    path_x, path_y = np.abs(np.diff(cx)).sum(), np.abs(np.diff(cy)).sum()
    return np.array([net(cy), abs(net(cx)), path_x, path_y, min(path_x, path_y), net(spread)])


def nearest_class_mean(x_fit, y_fit, x, y) -> float:
    mu, sd = x_fit.mean(0), x_fit.std(0) + 1e-6
    means = np.stack([((x_fit - mu) / sd)[y_fit == k].mean(0) for k in range(len(CLASSES))])
    predicted = np.argmin(((((x - mu) / sd)[:, None] - means[None]) ** 2).sum(-1), axis=1)
    return float((predicted == y).mean())


def nearest_neighbours(x_fit, y_fit, x, y, k: int = 15) -> float:
    distances = ((x[:, None] - x_fit[None]) ** 2).sum(-1)
    votes = y_fit[np.argsort(distances, axis=1)[:, :k]]
    predicted = np.array([np.bincount(v, minlength=len(CLASSES)).argmax() for v in votes])
    return float((predicted == y).mean())
