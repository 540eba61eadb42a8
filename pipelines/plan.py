"""Which samples, in which views, each process sees in each batch.

The plan is a pure function of (seed, epoch, rank, world size), so resumed runs
replay the same epochs and every loader (torch, resident, DALI) shards the same
way. Loaders are therefore never passed through `accelerator.prepare`, which
would shard them a second time.

Each global batch of `batch_size` samples is cut into `world` equal slices, one
per process, so that DDP's averaged gradient equals the single-process gradient
of the same global batch. An epoch ends with the ragged rest of its permutation
(as the reference's DataLoader; at most `world - 1` samples are left out to keep
the slices equal), or, with `drop_last`, that rest is left out (different samples
each epoch): every step then has the same shapes (one compiled graph, one CUDA
graph). A set smaller than one batch gives one batch of all of it either way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from pipelines.views import ViewSet


class Batch(NamedTuple):
    indices: np.ndarray  # int64 [B] sample indices into the split
    views: np.ndarray  # int64 [B] view ids (see pipelines.views)


def train_plan(num_samples: int, view_set: ViewSet, batch_size: int, seed: int, epoch: int,
               rank: int = 0, world: int = 1, drop_last: bool = False) -> list[Batch]:
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(num_samples)
    views = rng.integers(0, view_set.count, num_samples)
    return [Batch(order[mine], views[mine])
            for mine in _rank_slices(num_samples, batch_size, rank, world, drop_last)]


def _rank_slices(num_samples: int, batch_size: int, rank: int, world: int, drop_last: bool) -> list[slice]:
    """This process's slice of each global batch of an epoch's order: full batches, then the ragged rest
    unless `drop_last` (a set smaller than one batch is one batch either way)."""
    if drop_last and num_samples >= batch_size:
        num_samples -= num_samples % batch_size
    slices = []
    for start in range(0, num_samples, batch_size):
        per_rank = (min(start + batch_size, num_samples) - start) // world
        if per_rank == 0:
            break
        slices.append(slice(start + rank * per_rank, start + (rank + 1) * per_rank))
    return slices


def eval_plan(num_samples: int, batch_size: int, rank: int = 0, world: int = 1) -> list[Batch]:
    """Every sample exactly once across processes (shards may differ by one), view 0."""
    mine = np.arange(rank, num_samples, world)
    return [Batch(mine[i: i + batch_size], np.zeros(len(mine[i: i + batch_size]), dtype=np.int64))
            for i in range(0, len(mine), batch_size)]


def steps_per_epoch(num_samples: int, batch_size: int, world: int = 1, drop_last: bool = False) -> int:
    return len(_rank_slices(num_samples, batch_size, 0, world, drop_last))


# ---------------------------------------------------------------- clips (video)

class ClipBatch(NamedTuple):
    indices: np.ndarray  # int64 [B] video indices into the split
    views: np.ndarray  # int64 [B] clip view ids (pipelines.views.ClipViewSet)
    starts: np.ndarray  # int64 [B] first frame of each clip


@dataclass(frozen=True)
class ClipPlan:
    """epoch -> this process's clip batches; a picklable pure function, so DALI's forked or spawned
    workers recompute exactly the batches the main process iterates.

    train: every video once per epoch (3D-ResNets-PyTorch; with `drop_last`, but the ragged rest), a
    random view and a random start in 0..max(0, n - length), global batches cut into `world` equal
    slices as in `train_plan`.
    eval: consecutive non-overlapping clips (starts 0, length, 2 length, ... < n - 1, as the reference's
    test clips) covering every frame of every video but a lone last one (one clip from frame 0 for a
    one-frame video, which the reference leaves out), view 0, dealt round-robin: every clip exactly
    once across processes.
    eval with `eval_clips` k > 0: the reference's validation clips instead (its n_val_samples):
    starts 0, s, 2s, ... < n - 1 with s = max(1, ceil((n - 1 - length) / (k - 1))), about k per
    video (more for videos shorter than a clip, as there); k = 1: one clip from frame 0.
    `centre_stride` k > 1 (train): starts only where the clip's middle frame is a multiple of k
    (a per-frame source cache holds those frames), where the video has such a start.
    """
    frame_counts: tuple
    length: int
    batch_size: int
    train: bool = True
    view_count: int = 1
    seed: int = 0
    rank: int = 0
    world: int = 1
    eval_clips: int = 0
    centre_stride: int = 1
    drop_last: bool = False

    def __call__(self, epoch: int) -> list[ClipBatch]:
        counts = np.asarray(self.frame_counts, dtype=np.int64)
        if self.train:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(len(counts))
            views = rng.integers(0, self.view_count, len(counts))
            starts = self._train_starts(counts[order], rng.random(len(counts)))
            return [ClipBatch(order[mine], views[mine], starts[mine])
                    for mine in _rank_slices(len(counts), self.batch_size, self.rank, self.world, self.drop_last)]
        per_video = [self._eval_starts(int(n)) for n in counts]
        videos = np.repeat(np.arange(len(counts)), [len(s) for s in per_video])
        starts = np.concatenate(per_video) if len(counts) else videos
        videos, starts = videos[self.rank::self.world], starts[self.rank::self.world]
        return [ClipBatch(videos[i: i + self.batch_size], np.zeros(len(videos[i: i + self.batch_size]), np.int64),
                          starts[i: i + self.batch_size]) for i in range(0, len(videos), self.batch_size)]

    def _train_starts(self, counts: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """A uniform start in 0..max(0, n - length) per video (a uniform draw u in [0, 1) each)."""
        span = np.maximum(counts - self.length, 0) + 1
        starts = (uniform * span).astype(np.int64)
        k = self.centre_stride
        if k > 1:  # starts s with (s + length // 2) % k == 0, where there is one in range
            first = (-(self.length // 2)) % k
            choices = np.where(span > first, (span - 1 - first) // k + 1, 0)
            aligned = first + (uniform * np.maximum(choices, 1)).astype(np.int64) * k
            starts = np.where(choices > 0, aligned, starts)
        return starts

    def _eval_starts(self, n: int) -> np.ndarray:
        k = self.eval_clips
        if k == 1:
            return np.zeros(1, np.int64)
        # the reference's one loop, range(1, n_frames, step) over 1-based frames: test clips step a clip length
        # (a lone last frame starts none), validation clips spread k over the video
        step = self.length if k == 0 else max(1, math.ceil((n - 1 - self.length) / (k - 1)))
        return np.arange(0, max(n - 1, 1), step)
