"""PyTorch DataLoader for clips: each worker reads its clips' JPEGs from the frame store (opened
lazily in the worker, after the fork) and renders them with pipelines.render.render_clip."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pipelines.loaders import to_float_images
from pipelines.render import render_clip
from pipelines.views import ClipViewSet


class _Clips(Dataset):
    def __init__(self, videos, clip_views: ClipViewSet, length: int):
        self.videos, self.clip_views, self.length = videos, clip_views, length

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, key):
        index, view, start = key
        pixels = render_clip(self.videos, index, view, start, self.length, self.clip_views)  # [T, H, W, 3]
        return {"image": torch.from_numpy(pixels).permute(3, 0, 1, 2), "label": torch.tensor(self.videos.labels[index]),
                "index": torch.tensor(index), "view": torch.tensor(view), "start": torch.tensor(start),
                "video": torch.tensor(index)}


class _PlannedClips(Sampler):
    def __init__(self, plan):
        self.plan, self.current = plan, 0

    def __iter__(self):
        for b in self.plan(self.current):
            yield list(zip(b.indices.tolist(), b.views.tolist(), b.starts.tolist()))

    def __len__(self):
        return len(self.plan(self.current))


class TorchClipLoader:
    """Batches {image float [B, 3, T, H, W] in [0, 1], label, index, view, start, video} on `device`."""

    def __init__(self, videos, clip_views: ClipViewSet, plan, device: torch.device, workers: int = 2):
        self.sampler, self.device = _PlannedClips(plan), torch.device(device)
        self.loader = DataLoader(_Clips(videos, clip_views, plan.length), batch_sampler=self.sampler,
                                 num_workers=workers, pin_memory=self.device.type == "cuda",
                                 persistent_workers=workers > 0)

    def __len__(self):
        return len(self.sampler)

    def epoch(self, epoch: int):
        self.sampler.current = epoch
        for batch in self.loader:
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            batch["image"] = to_float_images(batch["image"])
            yield batch
