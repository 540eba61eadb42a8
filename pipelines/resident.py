"""Device-resident loader: the whole uint8 set lives on the training device
(GPU memory, or RAM on a CPU) and views are cut for a whole batch in one gather,
with no worker processes, as the fastest CIFAR trainers do.
Only for in-memory arrays (CIFAR, STL-10, the procedural set).
"""
from __future__ import annotations

import torch

from pipelines.datasets.base import ImageSet
from pipelines.loaders import PlanFn
from pipelines.views import ViewSet, apply_views


class ResidentLoader:
    def __init__(self, images: ImageSet, view_set: ViewSet, plan: PlanFn, device: torch.device, workers: int = 0):
        """`workers`: taken as every loader takes it; none are started."""
        if images.images is None:
            raise ValueError(f"data.loader=resident needs in-memory images; {images.name} is read from files "
                             "(use data.loader=torch or dali)")
        self.pixels = torch.from_numpy(images.images).to(device).permute(0, 3, 1, 2)  # NCHW view, no copy
        self.labels = torch.as_tensor(images.labels).to(device)
        self.view_set, self.plan, self.device = view_set, plan, device

    def __len__(self):
        return len(self.plan(0))

    def epoch(self, epoch: int):
        for batch in self.plan(epoch):
            index = torch.from_numpy(batch.indices).to(self.device)
            view = torch.from_numpy(batch.views).to(self.device)
            pixels = apply_views(self.pixels[index], view, self.view_set)
            yield {"image": pixels, "label": self.labels[index], "index": index, "view": view}
