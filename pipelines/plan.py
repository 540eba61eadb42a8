"""Which samples, in which views, each process sees in each batch.

The plan is a pure function of (seed, epoch, rank, world size), so resumed runs
replay the same epochs and every loader (torch, resident, DALI) shards the same
way. Loaders are therefore never passed through `accelerator.prepare`, which
would shard them a second time.

Each global batch of `batch_size` samples is cut into `world` equal slices, one
per process, so that DDP's averaged gradient equals the single-process gradient
of the same global batch. At most `world - 1` samples per epoch are left out
to keep the slices equal.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from pipelines.views import ViewSet


class Batch(NamedTuple):
    indices: np.ndarray  # int64 [B] sample indices into the split
    views: np.ndarray  # int64 [B] view ids (see pipelines.views)


def train_plan(num_samples: int, view_set: ViewSet, batch_size: int, seed: int, epoch: int,
               rank: int = 0, world: int = 1) -> list[Batch]:
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(num_samples)
    views = rng.integers(0, view_set.count, num_samples)
    batches = []
    for start in range(0, num_samples, batch_size):
        stop = min(start + batch_size, num_samples)
        per_rank = (stop - start) // world
        if per_rank == 0:
            break
        lo = start + rank * per_rank
        batches.append(Batch(order[lo: lo + per_rank], views[lo: lo + per_rank]))
    return batches


def eval_plan(num_samples: int, batch_size: int, rank: int = 0, world: int = 1) -> list[Batch]:
    """Every sample exactly once across processes (shards may differ by one), view 0."""
    mine = np.arange(rank, num_samples, world)
    return [Batch(mine[i: i + batch_size], np.zeros(len(mine[i: i + batch_size]), dtype=np.int64))
            for i in range(0, len(mine), batch_size)]


def steps_per_epoch(num_samples: int, batch_size: int, world: int = 1) -> int:
    full, rest = divmod(num_samples, batch_size)
    return full + (1 if rest >= world else 0)


# ---------------------------------------------------------------- clips (video)

class ClipBatch(NamedTuple):
    indices: np.ndarray  # int64 [B] video indices into the split
    views: np.ndarray  # int64 [B] clip view ids (pipelines.views.ClipViewSet)
    starts: np.ndarray  # int64 [B] first frame of each clip


@dataclass(frozen=True)
class ClipPlan:
    """epoch -> this process's clip batches; a picklable pure function, so DALI's forked or spawned
    workers recompute exactly the batches the main process iterates.

    train: every video once per epoch (3D-ResNets-PyTorch), a random view and a random start
    in 0..max(0, n - length), global batches cut into `world` equal slices as in `train_plan`.
    eval: consecutive non-overlapping clips (starts 0, length, 2 length, ...) covering every
    frame of every video, view 0, dealt round-robin: every clip exactly once across processes.
    """
    frame_counts: tuple
    length: int
    batch_size: int
    train: bool = True
    view_count: int = 1
    seed: int = 0
    rank: int = 0
    world: int = 1

    def __call__(self, epoch: int) -> list[ClipBatch]:
        counts = np.asarray(self.frame_counts, dtype=np.int64)
        if self.train:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(len(counts))
            views = rng.integers(0, self.view_count, len(counts))
            starts = (rng.random(len(counts)) * (np.maximum(counts[order] - self.length, 0) + 1)).astype(np.int64)
            batches = []
            for lo in range(0, len(counts), self.batch_size):
                hi = min(lo + self.batch_size, len(counts))
                per_rank = (hi - lo) // self.world
                if per_rank == 0:
                    break
                mine = slice(lo + self.rank * per_rank, lo + (self.rank + 1) * per_rank)
                batches.append(ClipBatch(order[mine], views[mine], starts[mine]))
            return batches
        videos = np.repeat(np.arange(len(counts)), -(-counts // self.length))
        starts = np.concatenate([np.arange(0, n, self.length) for n in counts]) if len(counts) else videos
        videos, starts = videos[self.rank::self.world], starts[self.rank::self.world]
        return [ClipBatch(videos[i: i + self.batch_size], np.zeros(len(videos[i: i + self.batch_size]), np.int64),
                          starts[i: i + self.batch_size]) for i in range(0, len(videos), self.batch_size)]
