"""Per-frame source cache for video: a 2D source's outputs on every k-th frame of every training
video, in every clip view, stored by engine.source_outputs.image_cache (same file format, identity, resumable
block build, validation) with one "sample" per cached frame:

    outputs  float16 [cached frames, K clip views, C]     row r = frame (r - first_row[v]) * k of video v

The identity hashes the source's fingerprint, the frame store's identity and the split's videos
(VideoSet.fingerprint), the frame stride k and the clip view set (crop boxes, flips, clip size).

A clip (video v, view, start) of length T is scored on its middle frame, frame T // 2 of the clip
(loop-padded as pipelines.views.clip_frame_indices pads): the provider returns the stored outputs
of that frame rounded to the nearest cached one, rendered in the clip's view at the clip's size,
exactly the pixels a live source sees in the clip's middle frame. With k = 1, or with clip starts
drawn so the middle frame is cached (ClipPlan.centre_stride = k), the outputs are those of the
clip's own middle frame, and cached training equals live training.
"""
from __future__ import annotations

import hashlib
from functools import cached_property

import numpy as np
import torch

from engine.source_outputs.image_cache import CachedSource, cache_spec, human_bytes, open_cached_source
from pipelines.render import render_clip
from pipelines.views import ClipViewSet


class CachedFrames:
    """Every k-th frame of a VideoSet as the source cache's samples (row -> (video, frame))."""

    def __init__(self, videos, stride: int, clip_views: ClipViewSet):
        if stride < 1:
            raise ValueError(f"source_cache.frame_stride must be >= 1, got {stride}")
        self.videos, self.stride, self.clip_views = videos, stride, clip_views
        per_video = -(-np.asarray(videos.frame_counts, dtype=np.int64) // stride)  # frames 0, k, 2k, ... < n
        self.first_row = np.concatenate([[0], np.cumsum(per_video)]).astype(np.int64)
        self.name, self.split = f"{videos.name}-frames{stride}", videos.split
        self._on_device: tuple | None = None  # (device, frame counts, first rows) there

    def __len__(self) -> int:
        return int(self.first_row[-1])

    @cached_property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.videos.fingerprint}/frame_stride={self.stride}".encode()).hexdigest()[:16]

    def video_and_frame(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        video = np.searchsorted(self.first_row, rows, side="right") - 1
        return video, (rows - self.first_row[video]) * self.stride

    def render_views(self, rows: np.ndarray, views: np.ndarray) -> torch.Tensor:
        """uint8 [N, 3, S, S]: each row's frame in the clip view, through the clip loaders' render_clip."""
        video, frame = self.video_and_frame(np.asarray(rows, dtype=np.int64))
        pixels = [render_clip(self.videos, int(v), int(view), int(f), 1, self.clip_views)[0]
                  for v, f, view in zip(video, frame, np.asarray(views))]
        return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2)

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame counts and first rows per video on `device`, copied there once (a copy per step would make
        every GPU step wait for the host)."""
        if self._on_device is None or self._on_device[0] != device:
            self._on_device = (device, torch.as_tensor(np.asarray(self.videos.frame_counts), device=device),
                               torch.as_tensor(self.first_row, device=device))
        return self._on_device[1:]

    def rows(self, index: torch.Tensor, start: torch.Tensor, length: int) -> torch.Tensor:
        """The cached row of each clip's middle frame (rounded to the nearest cached frame)."""
        counts, first = (table[index] for table in self._tables(index.device))
        centre = start + (length // 2) % torch.clamp(counts - start, max=length)
        k = self.stride
        cached = torch.minimum((centre + k // 2) // k, (counts - 1) // k)
        return first + cached


class CachedFrameSource:
    """Provider: batch {index (video), view, start} -> the stored outputs of each clip's middle frame."""

    def __init__(self, cached: CachedSource, frames: CachedFrames, length: int):
        self.cached, self.frames, self.length = cached, frames, length
        self.path, self.nbytes, self.in_memory = cached.path, cached.nbytes, cached.in_memory
        self.origin = cached.origin  # provenance: "reused" or "built"

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        rows = self.frames.rows(batch["index"], batch["start"], self.length)
        return self.cached({"index": rows, "view": batch["view"]})


def frame_cache_size(source, frames: CachedFrames, root) -> int:
    """Bytes the cache of `source` on `frames` takes (printed before building, and by configs' budgets)."""
    return cache_spec(source, frames, frames.clip_views, root).nbytes


def open_frame_cache(source, videos, clip_views: ClipViewSet, length: int, cache_cfg, mode: str, accelerator=None,
                     *, progress: bool = True, block_samples: int | None = None) -> CachedFrameSource:
    frames = CachedFrames(videos, cache_cfg.frame_stride, clip_views)
    main = accelerator is None or accelerator.is_main_process
    if main:
        print(f"source '{source.name}' on video: {len(frames)} cached frames (every {frames.stride}. frame of "
              f"{len(videos)} videos) x {clip_views.count} clip views x {source.num_classes} classes = "
              f"{human_bytes(frame_cache_size(source, frames, cache_cfg.root))}")
    cached = open_cached_source(source, frames, clip_views, cache_cfg, mode, accelerator, progress=progress,
                                block_samples=block_samples)
    return CachedFrameSource(cached, frames, length)
