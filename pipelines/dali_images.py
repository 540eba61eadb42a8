"""NVIDIA DALI loader: crop, flip (and JPEG decode + resize) in DALI's thread pool.

One pipeline, built once, fed by an `external_source` callback that reads the
current epoch's plan batch by batch (the plan is already sharded per process, so
nothing is sharded here). Per sample the callback hands DALI:

    pixels : uint8 HWC image (in-memory arrays), or the file's encoded bytes
    start  : int32 (y, x) crop anchor in the *unpadded* image, i.e. view offset - pad
    flip   : int32 0/1 horizontal mirror

and the graph is

    [decoders.image -> resize to image_size]  (files only; "mixed" = GPU decode on CUDA)
    -> slice(start, shape=(H, W), out-of-bounds zero fill)   == crop of the zero-padded image
    -> crop_mirror_normalize(mirror=flip, uint8, CHW)         == the view's flip

Exactness against the torch loader (pipelines.views.apply_view_numpy):
  * arrays: identical pixels (uint8, as every loader yields them: the networks
    convert them to float, models.network.unit_float).
  * JPEG files (CPU decode): decoding is identical to PIL (both libjpeg-turbo,
    EXIF orientation ignored like PIL's plain open). Resize uses linear +
    antialias, the closest DALI filter to PIL's bilinear (which widens its
    kernel when shrinking): an image already at `image_size` is returned exactly;
    a shrunk one differs by at most 1 grey level away from the border (PIL rounds
    after each separable pass) and by up to ~10 in the outermost rows/columns,
    where PIL renormalises the truncated kernel but DALI repeats the edge pixel.
    GPU ("mixed", nvJPEG) decoding may differ from libjpeg-turbo by a few levels.

Labels, indices and views come straight from the plan and the ImageSet.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from pipelines.datasets.base import ImageSet
from pipelines.loaders import PlanFn
from pipelines.plan import Batch
from pipelines.views import ViewSet

try:
    from nvidia.dali import Pipeline, fn, types
    from nvidia.dali.plugin.pytorch import feed_ndarray
except ImportError:  # reported as a config error when the loader is asked for
    Pipeline = None

PREFETCH = 2  # batches DALI prepares while the current one is consumed


class DaliLoader:
    def __init__(self, images: ImageSet, view_set: ViewSet, plan: PlanFn, device: torch.device, workers: int = 2):
        device = torch.device(device)
        _check_supported(images, device)
        first = plan(0)
        if not first:
            raise ValueError(f"data.loader=dali: the plan for {images.name}/{images.split} has no batches")
        self.images, self.view_set, self.plan, self.device = images, view_set, plan, device
        self.size = images.images.shape[1:3] if images.images is not None else tuple(images.image_size)
        self.max_batch = max(len(b.indices) for b in first)
        self.labels = torch.as_tensor(images.labels).to(device)
        # The source must not point back at the loader: a loader <-> pipeline cycle is freed only by the
        # garbage collector, which may then run in a forked DataLoader worker and abort it in DALI's shutdown.
        self.source = _PlanSource(images, view_set)
        self._owner: object | None = None  # token of the epoch iterator now using the pipeline
        self.pipe = self._build_pipeline(workers)

    def __len__(self) -> int:
        return len(self.plan(0))

    def epoch(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        batches = self.plan(epoch)
        largest = max((len(b.indices) for b in batches), default=0)
        if largest > self.max_batch:  # the pipeline's batch size is fixed when it is built
            raise ValueError(f"data.loader=dali: epoch {epoch} has a batch of {largest} samples, "
                             f"more than the {self.max_batch} of epoch 0 the pipeline was built for")
        return self._iterate(batches)

    # -- pipeline -------------------------------------------------------------------------------

    def _build_pipeline(self, workers: int) -> "Pipeline":
        gpu = self.device.type == "cuda"
        device_id = None
        if gpu:
            device_id = self.device.index if self.device.index is not None else torch.cuda.current_device()
        files = self.images.files is not None
        h, w = self.size
        pipe = Pipeline(batch_size=self.max_batch, num_threads=max(1, workers), device_id=device_id,
                        prefetch_queue_depth=PREFETCH, seed=0)
        with pipe:
            data, start, flip = fn.external_source(
                source=self.source, num_outputs=3, batch=True,
                dtype=[types.UINT8, types.INT32, types.INT32], ndim=[1 if files else 3, 1, 0],
                layout=[] if files else ["HWC"])
            if files:
                # adjust_orientation=False: PIL's Image.open in decode_resized ignores EXIF rotation too
                pixels = fn.decoders.image(data, device="mixed" if gpu else "cpu", output_type=types.RGB,
                                           adjust_orientation=False)
                pixels = fn.resize(pixels, resize_x=w, resize_y=h, interp_type=types.INTERP_LINEAR, antialias=True)
            else:
                pixels = data.gpu() if gpu else data
            crop = fn.slice(pixels, start=start, shape=[h, w], axis_names="HW",
                            out_of_bounds_policy="pad", fill_values=0)
            # uint8 out (mean 0, std 1 is exact): float conversion is left to torch, see the module doc
            out = fn.crop_mirror_normalize(crop, mirror=flip, dtype=types.UINT8, output_layout="CHW",
                                           mean=0.0, std=1.0)
            pipe.set_outputs(out)
        pipe.build()
        return pipe

    # -- epochs ---------------------------------------------------------------------------------

    def _iterate(self, batches: list[Batch]) -> Iterator[dict[str, torch.Tensor]]:
        self._release()  # an unfinished earlier epoch may still hold prefetched batches
        token = self._owner = object()
        self.source.batches = batches
        try:
            for batch in batches:
                if self._owner is not token:
                    raise RuntimeError("DaliLoader: a newer epoch() was started while this one was unfinished")
                yield self._to_torch(batch)
        finally:
            if self._owner is token:
                self._release()

    def _release(self) -> None:
        """End DALI's epoch: stop the source, drain what was prefetched (at most PREFETCH batches
        when an epoch is abandoned early), and rewind the source's iteration counter."""
        if self._owner is None:
            return
        self._owner, self.source.batches = None, []
        while True:
            try:
                self.pipe.run()
            except StopIteration:
                break
        self.pipe.reset()

    def _to_torch(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.device.type == "cuda":
            stream = torch.cuda.current_stream(self.device)
            (pixels,) = self.pipe.run(stream)  # outputs ready on torch's stream
            dali = pixels.as_tensor()
            image = torch.empty(dali.shape(), dtype=torch.uint8, device=self.device)
            feed_ndarray(dali, image, cuda_stream=stream)
        else:
            (pixels,) = self.pipe.run()
            image = torch.from_dlpack(pixels.as_tensor()).clone()  # DALI reuses its buffer at the next run
        index = torch.tensor(batch.indices, dtype=torch.int64).to(self.device)
        return {"image": image, "label": self.labels[index], "index": index,
                "view": torch.tensor(batch.views, dtype=torch.int64).to(self.device)}


class _PlanSource:
    """DALI's external source: inputs of batch `iteration` of the current epoch, called up to PREFETCH
    batches ahead of the consumer; StopIteration ends DALI's epoch exactly after the plan's last batch."""

    def __init__(self, images: ImageSet, view_set: ViewSet):
        self.images, self.view_set = images, view_set
        self.batches: list[Batch] = []  # set per epoch by the loader

    def __call__(self, iteration: int) -> tuple:
        if iteration >= len(self.batches):
            raise StopIteration
        batch = self.batches[iteration]
        dy, dx, flip = self.view_set.table[batch.views].T
        start = np.stack([dy, dx], axis=1).astype(np.int32) - self.view_set.pad
        return self._pixels(batch.indices), start, flip.astype(np.int32)

    def _pixels(self, indices: np.ndarray) -> np.ndarray | list[np.ndarray]:
        if self.images.images is not None:
            return self.images.images[indices]  # [B, H, W, 3], a fresh contiguous copy
        return [np.fromfile(self.images.files[i], dtype=np.uint8) for i in indices]


def _check_supported(images: ImageSet, device: torch.device) -> None:
    if Pipeline is None:
        raise ValueError("data.loader=dali needs NVIDIA DALI (pip install nvidia-dali-cuda120 or -cuda130); "
                         "or use data.loader=torch")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"data.loader=dali runs on cpu or cuda devices, not {device.type}; use data.loader=torch")
    if images.images is not None:
        arr = images.images
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"data.loader=dali needs uint8 [N, H, W, 3] images; {images.name} has "
                             f"{arr.dtype} {list(arr.shape)}")
