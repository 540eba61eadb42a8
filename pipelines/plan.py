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
