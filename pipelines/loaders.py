"""Loaders by name (`data.loader`). Every loader takes the same arguments and
yields the same batches, on the training device:

    {"image": float32 [B, 3, H, W] in [0, 1], "label": int64 [B] or float32 [B, C],
     "index": int64 [B] sample ids, "view": int64 [B] view ids}

Which samples and views come in which batch is decided by a plan function
(pipelines.plan), never by the loader, so all loaders agree batch for batch.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Protocol

import torch

from pipelines.datasets.base import ImageSet
from pipelines.plan import Batch
from pipelines.views import ViewSet

PlanFn = Callable[[int], list[Batch]]  # epoch -> this process's batches


class Loader(Protocol):
    def epoch(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]: ...
    def __len__(self) -> int: ...


def choose_loader(images: ImageSet, device: torch.device) -> str:
    """`data.loader: auto`, after `make bench` (bench/results.json): in-memory arrays are fastest
    device-resident (no workers at all); encoded files decode on the GPU with DALI where there
    is one, and on a CPU the torch DataLoader's workers kept up with DALI's CPU decoder."""
    if images.images is not None:
        return "resident"
    return "dali" if torch.device(device).type == "cuda" else "torch"


def build_loader(kind: str, images: ImageSet, view_set: ViewSet, plan: PlanFn, device: torch.device,
                 workers: int = 2) -> Loader:
    if kind == "auto":
        kind = choose_loader(images, device)
    if kind == "torch":
        from pipelines.torch_loaders import TorchLoader
        return TorchLoader(images, view_set, plan, device, workers)
    if kind == "resident":
        from pipelines.resident import ResidentLoader
        return ResidentLoader(images, view_set, plan, device)
    if kind == "dali":
        from pipelines.dali_images import DaliLoader
        return DaliLoader(images, view_set, plan, device, workers)
    raise ValueError(f"data.loader: unknown loader {kind!r} (auto, torch, resident, dali)")


def to_float_images(uint8_nchw: torch.Tensor) -> torch.Tensor:
    return uint8_nchw.float().div_(255)


def build_clip_loader(kind: str, videos, clip_views, plan, device: torch.device, workers: int = 2) -> Loader:
    """Clip loaders (video): `dali` (frame store -> DALI JPEG decode), `torch` (DataLoader, PIL); `auto`:
    DALI, which `make bench` measured at least as fast as torch even on a 2-core CPU (nvJPEG on a GPU).
    Batches: {image float [B, 3, T, H, W] in [0, 1], label, index, view, start, video}."""
    if kind in ("auto", "dali"):
        from pipelines.dali_clips import DaliClipLoader
        return DaliClipLoader(videos, clip_views, plan, device, workers)
    if kind == "torch":
        from pipelines.torch_clips import TorchClipLoader
        return TorchClipLoader(videos, clip_views, plan, device, workers)
    raise ValueError(f"data.loader: unknown clip loader {kind!r} (auto, torch, dali)")


@contextmanager
def torch_threads(count: int):
    """Run the enclosed torch ops on `count` intra-op threads: a loader's own work in the training
    process while its decoding threads or workers keep the cores busy (torch's OpenMP threads
    would spin against them: 3-4x the CPU time per clip measured on 2 cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
