"""Device-resident loader: the whole uint8 set lives on the training device
(GPU memory, or RAM on a CPU) and views are cut for a whole batch in one gather,
with no worker processes, as the fastest CIFAR trainers do. The host's only part
is the epoch's plan, copied to the device once per epoch: no step waits for it.
Only for in-memory arrays (CIFAR, STL-10, the procedural set).
"""
from __future__ import annotations

import numpy as np
import torch

from pipelines.datasets.base import ImageSet
from pipelines.loaders import PlanFn
from pipelines.views import ViewSet, gather_views, pad_for_views


class ResidentLoader:
    def __init__(self, images: ImageSet, view_set: ViewSet, plan: PlanFn, device: torch.device, workers: int = 0):
        """`workers`: taken as every loader takes it; none are started."""
        if images.images is None:
            raise ValueError(f"data.loader=resident needs in-memory images; {images.name} is read from files "
                             "(use data.loader=torch or dali)")
        # NCHW view of the NHWC set, padded once for the views: (1 + 2 pad / side)^2 of its size
        self.pixels = pad_for_views(torch.from_numpy(images.images).to(device).permute(0, 3, 1, 2), view_set)
        self.labels = torch.as_tensor(images.labels).to(device)
        self.view_set, self.plan, self.device = view_set, plan, device

    def __len__(self):
        return len(self.plan(0))

    def epoch(self, epoch: int):
        plan = self.plan(epoch)
        if not plan:
            return
        sizes = [len(batch.indices) for batch in plan]
        indices = torch.from_numpy(np.concatenate([batch.indices for batch in plan])).to(self.device)
        views = torch.from_numpy(np.concatenate([batch.views for batch in plan])).to(self.device)
        for index, view in zip(indices.split(sizes), views.split(sizes)):
            pixels = gather_views(self.pixels, index, view, self.view_set)
            yield {"image": pixels, "label": self.labels[index], "index": index, "view": view}
