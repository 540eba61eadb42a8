"""Views are exact crops/flips of the padded image; plans shard like one process would."""
import numpy as np
import pytest
import torch

from pipelines.plan import eval_plan, steps_per_epoch, train_plan
from pipelines.views import ViewSet, apply_view_numpy, apply_views


def test_view_table_covers_every_crop_and_flip_once():
    views = ViewSet(pad=4, count=162)
    rows = {tuple(r) for r in views.table.tolist()}
    assert len(rows) == 162 == views.max_count
    assert tuple(views.table[0]) == (4, 4, 0) and tuple(views.table[1]) == (4, 4, 1)


def test_smaller_view_sets_are_prefixes_and_fingerprints_differ():
    assert np.array_equal(ViewSet(4, 10).table, ViewSet(4, 162).table[:10])
    assert ViewSet(4, 2).fingerprint() != ViewSet(4, 4).fingerprint() != ViewSet(2, 4).fingerprint()


@pytest.mark.parametrize("bad", [dict(pad=4, count=3), dict(pad=4, count=0), dict(pad=1, count=20)])
def test_bad_view_sets_are_refused(bad):
    with pytest.raises(ValueError, match="views"):
        ViewSet(**bad)


def test_views_are_the_crop_and_flip_by_hand():
    image = np.random.default_rng(0).integers(0, 255, (8, 6, 3), dtype=np.uint8)
    views = ViewSet(pad=2, count=50)
    padded = np.zeros((12, 10, 3), np.uint8)
    padded[2:10, 2:8] = image
    for v in range(50):
        dy, dx, flip = views.table[v]
        expected = padded[dy:dy + 8, dx:dx + 6]
        expected = expected[:, ::-1] if flip else expected
        assert np.array_equal(apply_view_numpy(image, v, views), expected)


def test_batched_views_equal_per_sample_views():
    images = np.random.default_rng(1).integers(0, 255, (16, 10, 12, 3), dtype=np.uint8)
    views = ViewSet(pad=3, count=98)
    ids = torch.arange(16) * 6
    batched = apply_views(torch.from_numpy(images).permute(0, 3, 1, 2), ids, views).permute(0, 2, 3, 1).numpy()
    for i in range(16):
        assert np.array_equal(batched[i], apply_view_numpy(images[i], int(ids[i]), views))


def test_train_plan_shards_each_global_batch_into_equal_slices():
    views = ViewSet(4, 162)
    single = train_plan(103, views, 20, seed=3, epoch=5)
    ranks = [train_plan(103, views, 20, seed=3, epoch=5, rank=r, world=2) for r in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == steps_per_epoch(103, 20, 2) == 6
    for b, batch in enumerate(single[:5]):
        joined = np.concatenate([ranks[0][b].indices, ranks[1][b].indices])
        assert np.array_equal(joined, batch.indices)
    assert len(ranks[0][5].indices) == len(ranks[1][5].indices) == 1  # last batch: 3 samples -> 1 + 1, one left out
    assert train_plan(103, views, 20, 3, 5)[0].indices.tolist() == single[0].indices.tolist()  # a pure function
    assert train_plan(103, views, 20, 3, 6)[0].indices.tolist() != single[0].indices.tolist()


def test_drop_last_gives_full_batches_and_the_ragged_rest_differs_per_epoch():
    views = ViewSet(4, 162)
    assert [len(b.indices) for b in train_plan(103, views, 20, seed=3, epoch=0)] == [20] * 5 + [3]  # the default
    assert steps_per_epoch(103, 20, drop_last=True) == 5
    left_out = []
    for epoch in range(3):
        plan = train_plan(103, views, 20, seed=3, epoch=epoch, drop_last=True)
        assert [len(b.indices) for b in plan] == [20] * 5  # static shapes: 3 samples left out
        left_out.append(set(range(103)) - set(np.concatenate([b.indices for b in plan]).tolist()))
    assert len(left_out[0]) == 3 and left_out[0] != left_out[1]
    assert [len(b.indices) for b in train_plan(7, views, 20, seed=0, epoch=0, drop_last=True)] == [7]  # one batch
    assert [len(b.indices) for b in train_plan(7, views, 20, 0, 0, rank=1, world=2, drop_last=True)] == [3]


def test_eval_plan_sees_every_sample_exactly_once():
    seen = np.concatenate([b.indices for r in range(3) for b in eval_plan(100, 16, r, 3)])
    assert sorted(seen.tolist()) == list(range(100))


def test_device_views_of_the_resident_set_are_the_host_loaders_pixels_for_every_view():
    """The resident loader's gather (index arithmetic on the device set) against the per-sample host path
    (pipelines.views.apply_view_numpy, what the torch loader's workers run), over a plan holding every view id."""
    from pipelines.datasets.base import ImageSet
    from pipelines.plan import Batch
    from pipelines.resident import ResidentLoader
    from pipelines.torch_loaders import TorchLoader

    views = ViewSet(pad=4, count=162)
    rng = np.random.default_rng(2)
    images = ImageSet("arrays", "train", rng.integers(0, 3, 40), 3, (10, 12),
                      images=rng.integers(1, 256, (40, 10, 12, 3), dtype=np.uint8))  # no 0: padding shows
    ids = rng.permutation(162)
    plan = lambda epoch: [Batch(rng.integers(0, 40, 54), ids[i: i + 54]) for i in range(0, 162, 54)]
    fixed = plan(0)
    resident = list(ResidentLoader(images, views, lambda epoch: fixed, torch.device("cpu")).epoch(0))
    host = list(TorchLoader(images, views, lambda epoch: fixed, torch.device("cpu"), workers=0).epoch(0))
    assert sorted(torch.cat([b["view"] for b in resident]).tolist()) == list(range(162))
    for got, want in zip(resident, host, strict=True):
        assert got["image"].dtype == torch.uint8 and torch.equal(got["image"], want["image"])
        assert torch.equal(got["index"], want["index"]) and torch.equal(got["label"], want["label"])
        assert (got["image"] == 0).any()  # some views reach into the padding
