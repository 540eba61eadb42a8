"""PyTorch DataLoader: per-sample decode + view in worker processes.

The general path: works for arrays and encoded files alike (VOC JPEGs).
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pipelines.datasets.base import ImageSet
from pipelines.loaders import PlanFn, to_float_images
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
    """Yields the plan's (index, view) batches; the epoch is set before each pass."""

    def __init__(self, plan: PlanFn):
        self.plan, self.current = plan, 0

    def __iter__(self):
        for batch in self.plan(self.current):
            yield list(zip(batch.indices.tolist(), batch.views.tolist()))

    def __len__(self):
        return len(self.plan(self.current))


class TorchLoader:
    def __init__(self, images: ImageSet, view_set: ViewSet, plan: PlanFn, device: torch.device, workers: int = 2):
        self.sampler = _PlannedBatches(plan)
        self.device = device
        self.loader = DataLoader(_ViewedImages(images, view_set), batch_sampler=self.sampler, num_workers=workers,
                                 pin_memory=device.type == "cuda", persistent_workers=workers > 0)

    def __len__(self):
        return len(self.sampler)

    def epoch(self, epoch: int):
        self.sampler.current = epoch
        for batch in self.loader:
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            batch["image"] = to_float_images(batch["image"])
            yield batch
