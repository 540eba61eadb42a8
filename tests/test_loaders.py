"""Loaders agree batch for batch: DALI (CPU pipelines here) against the torch and resident loaders."""
from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nvidia.dali  # noqa: F401  a pinned dependency: its absence must fail, not skip

from engine.config import ImageDataConfig
from pipelines.dali_images import DaliLoader
from pipelines.datasets import build_split
from pipelines.datasets.base import ImageSet, decode_resized
from pipelines.loaders import LOADERS, build_loader
from pipelines.plan import Batch, eval_plan, train_plan
from pipelines.resident import ResidentLoader
from pipelines.torch_loaders import TorchLoader
from pipelines.views import EVAL_VIEWS, ViewSet

CPU = torch.device("cpu")
VIEWS = ViewSet(pad=4, count=162)
BATCH = 24  # 64 samples -> batches of 24, 24 and a partial 16

# DALI resize (linear + antialias) vs PIL bilinear, in grey levels, measured on the smooth test JPEGs below:
# at most 1 away from the outermost row/column (rounding), 2 on it (PIL renormalises its truncated
# kernel at the border, DALI repeats the edge pixel), about 0.15 on average; exact without resizing.
JPEG_INTERIOR_MAX, JPEG_MAX, JPEG_MEAN = 1, 3, 0.3


@pytest.fixture(scope="module")
def procedural(tmp_path_factory) -> ImageSet:
    cfg = ImageDataConfig(dataset="procedural", root=tmp_path_factory.mktemp("data"),
                     procedural={"train_size": 64, "test_size": 16})
    return build_split(cfg, "train")


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> ImageSet:
    """Small smooth JPEGs of several sizes (one already 48x48, one greyscale), multi-hot labels."""
    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    files = []
    for k, (h, w) in enumerate([(48, 48), (60, 80), (100, 37), (31, 45), (96, 72), (40, 130), (64, 64)]):
        y, x = np.mgrid[0:h, 0:w] / max(h, w)
        img = np.stack([128 + 100 * np.sin(6 * x + k), 255 * y, 128 + 100 * np.cos(9 * (x + y))], -1)
        img = Image.fromarray(np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8))
        if k == 6:
            img = img.convert("L")
        files.append(str(root / f"{k}.jpg"))
        img.save(files[-1], quality=90)
    labels = np.eye(3, dtype=np.float32)[np.arange(len(files)) % 3]
    labels[0, 2] = 1  # multi-hot
    return ImageSet("jpegs", "train", labels, 3, (48, 48), files=files)


def train_fn(images: ImageSet, batch: int = BATCH):
    return lambda epoch: train_plan(len(images), VIEWS, batch, seed=0, epoch=epoch)


def pixel_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.int() - b.int()).abs()  # uint8 subtraction would wrap around


def assert_same_batches(got: list[dict], want: list[dict], image_tol: int = 0) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.keys() == b.keys()
        for key in ("index", "view", "label"):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        assert a["image"].dtype == b["image"].dtype == torch.uint8
        assert a["image"].shape == b["image"].shape
        if image_tol == 0:
            assert torch.equal(a["image"], b["image"])
        else:
            assert pixel_diff(a["image"], b["image"]).max().item() <= image_tol


def test_dali_matches_torch_and_resident_exactly_on_arrays(procedural):
    plan = train_fn(procedural)
    dali = DaliLoader(procedural, VIEWS, plan, CPU, workers=2)
    torch_loader = TorchLoader(procedural, VIEWS, plan, CPU, workers=0)
    resident = ResidentLoader(procedural, VIEWS, plan, CPU)
    for epoch in range(2):  # the second epoch checks the pipeline's reset between epochs
        got = list(dali.epoch(epoch))
        assert_same_batches(got, list(torch_loader.epoch(epoch)))
        assert_same_batches(got, list(resident.epoch(epoch)))
        assert got[0]["image"].is_contiguous()


def ragged_plan(images: ImageSet, batch: int = BATCH):
    """Full batches and a smaller last one, in random views (training and evaluation plans end so):
    what every loader must handle."""
    def plan(epoch):
        rng = np.random.default_rng(epoch)
        order, views = rng.permutation(len(images)), rng.integers(0, VIEWS.count, len(images))
        return [Batch(order[i: i + batch], views[i: i + batch]) for i in range(0, len(images), batch)]
    return plan


def test_partial_last_batch_and_epoch_lengths(procedural):
    plan = ragged_plan(procedural)
    loader = DaliLoader(procedural, VIEWS, plan, CPU, workers=1)
    assert len(loader) == 3
    for epoch in range(3):
        batches = list(loader.epoch(epoch))
        assert [len(b["index"]) for b in batches] == [24, 24, 16]
        assert [b["image"].shape for b in batches] == [(24, 3, 32, 32)] * 2 + [(16, 3, 32, 32)]
        seen = torch.cat([b["index"] for b in batches]).sort().values
        assert torch.equal(seen, torch.arange(64))  # every sample once: nothing dropped or duplicated
        for b, planned in zip(batches, plan(epoch)):
            assert b["index"].tolist() == planned.indices.tolist() and b["view"].tolist() == planned.views.tolist()


def test_eval_plans_over_two_ranks_cover_every_sample_once(procedural):
    seen = []
    for rank in range(2):
        plan = lambda epoch, rank=rank: eval_plan(len(procedural), batch_size=10, rank=rank, world=2)
        dali = DaliLoader(procedural, EVAL_VIEWS, plan, CPU, workers=2)
        got = list(dali.epoch(0))
        assert [len(b["index"]) for b in got] == [10, 10, 10, 2]
        assert_same_batches(got, list(TorchLoader(procedural, EVAL_VIEWS, plan, CPU, workers=0).epoch(0)))
        for b in got:  # view 0 of EVAL_VIEWS is the untouched image
            raw = torch.from_numpy(procedural.images[b["index"].numpy()]).permute(0, 3, 1, 2)
            assert torch.equal(b["image"], raw)
            assert torch.equal(b["view"], torch.zeros_like(b["view"]))
        seen += torch.cat([b["index"] for b in got]).tolist()
    assert sorted(seen) == list(range(len(procedural)))


def test_abandoned_epoch_does_not_leak_into_the_next(procedural):
    plan = train_fn(procedural, batch=8)  # 8 batches: DALI has batches prefetched when we stop
    dali = DaliLoader(procedural, VIEWS, plan, CPU, workers=2)
    want = list(TorchLoader(procedural, VIEWS, plan, CPU, workers=0).epoch(1))
    for _ in zip(range(2), dali.epoch(0)):
        pass
    assert_same_batches(list(dali.epoch(1)), want)
    stale = dali.epoch(0)
    next(stale)
    assert_same_batches(list(dali.epoch(1)), want)  # a newer epoch takes the pipeline over...
    with pytest.raises(RuntimeError, match="newer epoch"):
        next(stale)  # ...and the stale one refuses to go on


def test_dali_decodes_and_resizes_jpegs_like_pil(jpegs):
    plan = lambda epoch: eval_plan(len(jpegs), batch_size=4)
    loader = DaliLoader(jpegs, EVAL_VIEWS, plan, CPU, workers=2)
    for batch in loader.epoch(0):
        assert torch.equal(batch["label"], torch.from_numpy(jpegs.labels[batch["index"].numpy()]))
        for image, i in zip(batch["image"], batch["index"].tolist()):
            want = torch.tensor(decode_resized(jpegs.files[i], jpegs.image_size)).permute(2, 0, 1)
            diff = pixel_diff(image, want)
            if i == 0:  # already 48x48: decoded without resizing, exactly as PIL
                assert diff.max() == 0
            assert diff[:, 1:-1, 1:-1].max() <= JPEG_INTERIOR_MAX
            assert diff.max() <= JPEG_MAX


def test_dali_matches_torch_on_jpeg_views(jpegs):
    plan = ragged_plan(jpegs, batch=3)  # 7 files -> 3, 3, 1
    dali = DaliLoader(jpegs, VIEWS, plan, CPU, workers=2)
    torch_loader = TorchLoader(jpegs, VIEWS, plan, CPU, workers=0)
    for epoch in range(2):
        got, want = list(dali.epoch(epoch)), list(torch_loader.epoch(epoch))
        assert [len(b["index"]) for b in got] == [3, 3, 1]
        assert_same_batches(got, want, image_tol=JPEG_MAX)
        diff = torch.cat([pixel_diff(a["image"], b["image"]).flatten() for a, b in zip(got, want)]).float()
        assert diff.mean() <= JPEG_MEAN


def test_every_loader_name_builds_through_the_registry(procedural):
    """LOADERS is the one list of `data.loader` names: each builds its own class (auto: resident for arrays)."""
    expected = {"auto": ResidentLoader, "resident": ResidentLoader, "torch": TorchLoader, "dali": DaliLoader}
    assert set(LOADERS) == set(expected)
    for name, kind in expected.items():
        loader = build_loader(name, procedural, VIEWS, train_fn(procedural), CPU, workers=0 if name == "torch" else 1)
        assert type(loader) is kind, name
        assert LOADERS[name].clips is not None or LOADERS[name].no_clips, name
        del loader
    with pytest.raises(ValueError, match="unknown loader 'gpu'; known: auto, dali, resident, torch"):
        build_loader("gpu", procedural, VIEWS, train_fn(procedural), CPU)


def test_build_loader_dali(procedural):
    loader = build_loader("dali", procedural, VIEWS, train_fn(procedural), CPU, workers=2)
    assert isinstance(loader, DaliLoader) and len(loader) == 3  # 64 samples: 24, 24, 16
    batch = next(iter(loader.epoch(0)))
    assert batch["image"].shape == (24, 3, 32, 32) and batch["image"].dtype == torch.uint8
    assert batch["label"].dtype == torch.int64 and batch["index"].dtype == batch["view"].dtype == torch.int64


def test_pipeline_freed_without_the_garbage_collector(procedural):
    """No loader <-> pipeline reference cycle: otherwise the collector may free the pipeline inside a
    forked DataLoader worker, where DALI's shutdown aborts the worker."""
    loader = DaliLoader(procedural, VIEWS, train_fn(procedural), CPU, workers=1)
    next(iter(loader.epoch(0)))
    pipe = weakref.ref(loader.pipe)
    gc.disable()
    try:
        del loader
        assert pipe() is None
    finally:
        gc.enable()


def test_clear_errors(procedural):
    with pytest.raises(ValueError, match="cpu or cuda"):
        DaliLoader(procedural, VIEWS, train_fn(procedural), torch.device("meta"), workers=1)
    floats = ImageSet("floats", "train", procedural.labels, 6, (32, 32), images=procedural.images.astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        DaliLoader(floats, VIEWS, train_fn(floats), CPU, workers=1)
    with pytest.raises(ValueError, match="no batches"):
        DaliLoader(procedural, VIEWS, lambda epoch: [], CPU, workers=1)
    growing = lambda epoch: train_plan(len(procedural), VIEWS, 16 * (epoch + 1), seed=0, epoch=epoch)
    loader = DaliLoader(procedural, VIEWS, growing, CPU, workers=1)
    with pytest.raises(ValueError, match="built for"):
        loader.epoch(1)
