"""PyTorch DataLoader: per-sample decode + view in worker processes.

The general path: works for arrays and encoded files alike (VOC JPEGs).
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pipelines.datasets.base import ImageSet
from pipelines.loaders import PlanFn
from pipelines.render import render_image
from pipelines.views import ViewSet


class _ViewedImages(Dataset):
    def __init__(self, images: ImageSet, view_set: ViewSet):
        self.images, self.view_set = images, view_set

    def __len__(self):
        return len(self.images)

    def __getitem__(self, key):
        index, view = key
        pixels = render_image(self.images, index, view, self.view_set)
        return {"image": torch.from_numpy(pixels).permute(2, 0, 1), "label": torch.as_tensor(self.images.labels[index]),
                "index": torch.tensor(index), "view": torch.tensor(view)}


class _PlannedBatches(Sampler):
    """Yields the plan's batches as dataset keys; the epoch is set before each pass."""

    def __init__(self, plan: PlanFn, keys):
        self.plan, self.keys, self.current = plan, keys, 0

    def __iter__(self):
        for batch in self.plan(self.current):
            yield self.keys(batch)

    def __len__(self):
        return len(self.plan(self.current))


class PlannedDataLoader:
    """A DataLoader whose batches are a plan's (pipelines.plan), moved to `device` (uint8 images).

    `keys(batch)` turns one planned batch into the dataset keys of its samples; images and clips
    differ only in their dataset and keys.
    """

    def __init__(self, dataset: Dataset, plan, keys, device: torch.device, workers: int = 2):
        self.sampler, self.device = _PlannedBatches(plan, keys), torch.device(device)
        self.loader = DataLoader(dataset, batch_sampler=self.sampler, num_workers=workers,
                                 pin_memory=self.device.type == "cuda", persistent_workers=workers > 0)

    def __len__(self):
        return len(self.sampler)

    def epoch(self, epoch: int):
        self.sampler.current = epoch
        for batch in self.loader:
            yield {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}


def image_keys(batch) -> list[tuple[int, int]]:
    return list(zip(batch.indices.tolist(), batch.views.tolist()))


class TorchLoader(PlannedDataLoader):
    def __init__(self, images: ImageSet, view_set: ViewSet, plan: PlanFn, device: torch.device, workers: int = 2):
        super().__init__(_ViewedImages(images, view_set), plan, image_keys, device, workers)
