"""PyTorch DataLoader for clips: each worker reads its clips' JPEGs from the frame store (opened
lazily in the worker, after the fork) and renders them with pipelines.render.render_clip."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from pipelines.render import render_clip
from pipelines.torch_loaders import PlannedDataLoader
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


def clip_keys(batch) -> list[tuple[int, int, int]]:
    return list(zip(batch.indices.tolist(), batch.views.tolist(), batch.starts.tolist()))


class TorchClipLoader(PlannedDataLoader):
    """Batches {image uint8 [B, 3, T, H, W], label, index, view, start, video} on `device`."""

    def __init__(self, videos, clip_views: ClipViewSet, plan, device: torch.device, workers: int = 2):
        super().__init__(_Clips(videos, clip_views, plan.length), plan, clip_keys, device, workers)
