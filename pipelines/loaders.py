"""Loaders by name (`data.loader`, the names of `LOADERS`). Every loader takes the same arguments and
yields the same batches, on the training device:

    {"image": uint8 [B, 3, H, W] pixels, "label": int64 [B] or float32 [B, C],
     "index": int64 [B] sample ids, "view": int64 [B] view ids}

Which samples and views come in which batch is decided by a plan function
(pipelines.plan), never by the loader, so all loaders agree batch for batch.
Clip loaders (video) yield {image [B, 3, T, H, W], label, index, view, start, video}; a name
either has a clip loader or says why not (`LoaderKind.no_clips`), and the config schema
checks `data.loader` against `LOADERS`.

Images stay uint8 up to the network: its Normalize (models.network.unit_float) makes them float on
the training device, so a loader moves a quarter of the bytes and spends no CPU on the conversion.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import torch

from foundation.registry import Registry, UnknownName
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
    return "dali" if torch.device(device).type == "cuda" and dali_installed() else "torch"


def choose_clip_loader() -> str:
    """`data.loader: auto` for clips: DALI, which `make bench` measured ~1.9x the torch clip loader even
    on a 2-core CPU (nvJPEG on a GPU), where it is installed."""
    return "dali" if dali_installed() else "torch"


@functools.cache  # once per process: what is installed does not change, and the line is said once
def dali_installed() -> bool:
    """NVIDIA DALI has Linux wheels only: without it `auto` takes the torch loaders (one line says so)."""
    if importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.dali") is None:
        print("data.loader auto: NVIDIA DALI is not installed, so the torch loaders "
              "(pip install nvidia-dali-cuda130 for DALI's loaders)", flush=True)
        return False
    return True


def build_loader(kind: str, images: ImageSet, view_set: ViewSet, plan: PlanFn, device: torch.device,
                 workers: int = 2) -> Loader:
    return loader_kind(kind).images(images, view_set, plan, device, workers=workers)


def build_clip_loader(kind: str, videos, clip_views, plan, device: torch.device, workers: int = 2) -> Loader:
    """Batches {image uint8 [B, 3, T, H, W], label, index, view, start, video}."""
    entry = loader_kind(kind)
    if entry.clips is None:
        raise ValueError(f"data.loader: {no_clip_loader(kind)}")
    return entry.clips(videos, clip_views, plan, device, workers=workers)


# ---------------------------------------------------------------- the registry of `data.loader` names

@dataclass(frozen=True)
class LoaderKind:
    """One `data.loader` name: its image loader and its clip loader, each built as
    `(data, views, plan, device, workers=n) -> Loader`; `no_clips` says in one line why a loader
    without a clip variant has none."""
    images: Callable[..., Loader]
    clips: Callable[..., Loader] | None = None
    no_clips: str = ""

    def __post_init__(self):
        if (self.clips is None) == (not self.no_clips):
            raise ValueError("a loader has a clip builder or says why it has none (no_clips), not both")


def _imported(module: str, name: str) -> Callable[..., Loader]:
    """`module.name`, imported when a loader is built: DALI is optional until it is asked for."""
    return lambda *args, **kwargs: getattr(importlib.import_module(module), name)(*args, **kwargs)


def _auto_images(images: ImageSet, view_set: ViewSet, plan: PlanFn, device: torch.device, workers: int = 2) -> Loader:
    return LOADERS[choose_loader(images, device)].images(images, view_set, plan, device, workers=workers)


def _auto_clips(videos, clip_views, plan: PlanFn, device: torch.device, workers: int = 2) -> Loader:
    return LOADERS[choose_clip_loader()].clips(videos, clip_views, plan, device, workers=workers)


LOADERS: Registry[LoaderKind] = Registry("loader", entries={
    "auto": LoaderKind(_auto_images, _auto_clips),  # choose_loader, choose_clip_loader
    "resident": LoaderKind(_imported("pipelines.resident", "ResidentLoader"),
                           no_clips="it holds in-memory image arrays, and clips are read from a frame store"),
    "torch": LoaderKind(_imported("pipelines.torch_loaders", "TorchLoader"),
                        _imported("pipelines.torch_clips", "TorchClipLoader")),
    "dali": LoaderKind(_imported("pipelines.dali_images", "DaliLoader"),
                       _imported("pipelines.dali_clips", "DaliClipLoader")),
})


def loader_kind(name: str) -> LoaderKind:
    try:
        return LOADERS[name]
    except UnknownName as e:
        raise ValueError(f"data.loader: {e}") from None


def no_clip_loader(name: str) -> str:
    """One line for a loader that cannot load clips: why, and which can."""
    clip_loaders = ", ".join(sorted(n for n, kind in LOADERS.items() if kind.clips is not None))
    return f"{name!r} has no clip loader ({LOADERS[name].no_clips}); clips load with {clip_loaders}"


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
