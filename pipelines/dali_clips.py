"""NVIDIA DALI loader for clips from the frame store.

Parallel `external_source` workers (DALI's Python worker pool, started when the loader is built:
build it before any CUDA context, or the workers are spawned instead of forked) read each batch's
JPEG bytes from the frame store, which every worker opens lazily after it starts. The B*T frames
of a batch are one flat DALI batch, each decoded only within its view's square crop box:

    decoders.image_slice ("mixed" = nvJPEG on a GPU, "cpu" = libjpeg-turbo; ROI decoding)
    -> flip when the view flips (DALI's threads; mirroring commutes exactly with the resize)
    GPU: -> resize to S x S (linear + antialias) in DALI
    CPU: -> pipelines.render.resize_clip per clip in torch (the torch loader's own resize; DALI's
            CPU resize cost ~4x the decoding of these small frames, torch's uint8 kernel ~1/3 of it)
    -> uint8 [B, 3, T, S, S], laid out in memory as the frames come, [B, T, S, S, 3]
       (torch.channels_last_3d): the network's input conversion makes it contiguous float in one
       pass on the device, where a loader-side transposition of uint8 cost ~1 ms a clip on a CPU

Which clips come in which batch is the plan's (pipelines.plan.ClipPlan): the workers recompute it
for the epoch the main process announces through a small table (DALI epoch number ->
training epoch, a memory-mapped file), written before DALI starts the epoch. Same pixels as the
torch loader's render_clip up to the JPEG decoder (tests/test_video.py measures it).
"""
from __future__ import annotations

import numpy as np
import torch
import os
import tempfile

from pipelines.loaders import torch_threads
from pipelines.render import resize_clip
from pipelines.views import ClipViewSet, clip_frame_indices

try:
    from nvidia.dali import Pipeline, fn, types
    from nvidia.dali.plugin.pytorch import feed_ndarray
except ImportError:  # reported as a config error when the loader is asked for
    Pipeline = None

PREFETCH = 2
EPOCH_SLOTS = 4096  # DALI epoch numbers kept in the shared table (mod)


def pack_bytes(blobs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Byte strings -> (uint8 [N, longest] zero-padded, int32 [N, 1] lengths): one array per batch crosses
    from the workers to DALI instead of N (DALI's per-sample Python work there cost ~1 ms a clip);
    `fn.slice(packed, start=[0], shape=lengths, axes=[0])` gives the exact byte strings back."""
    lengths = np.fromiter(map(len, blobs), np.int32, len(blobs))
    packed = np.zeros((len(blobs), int(lengths.max())), np.uint8)
    for row, blob in zip(packed, blobs):
        row[:len(blob)] = blob
    return packed, lengths[:, None]


class _ClipSource:
    """Runs in DALI's worker processes: BatchInfo -> (JPEGs of B*T frames, crop (x0, y0), crop (w, h), flip)."""

    def __init__(self, videos, clip_views: ClipViewSet, plan, table_name: str):
        self.videos, self.clip_views, self.plan, self.table_name = videos, clip_views, plan, table_name
        self._table, self._cached = None, (None, None)

    def epoch_batches(self, dali_epoch: int):
        if self._table is None:
            self._table = np.memmap(self.table_name, np.int64, "r", shape=(EPOCH_SLOTS,))
        epoch = int(self._table[dali_epoch % EPOCH_SLOTS])
        if self._cached[0] != epoch:
            self._cached = (epoch, self.plan(epoch))
        return self._cached[1]

    def __call__(self, info):
        batches = self.epoch_batches(info.epoch_idx)
        if info.iteration >= len(batches):
            raise StopIteration
        batch = batches[info.iteration]
        length = self.plan.length
        jpegs, anchors, shapes, flips = [], [], [], []
        for index, view, start in zip(batch.indices.tolist(), batch.views.tolist(), batch.starts.tolist()):
            frames = clip_frame_indices(int(self.videos.frame_counts[index]), start, length)
            jpegs += self.videos.clip_jpegs(index, frames)
            x0, y0, x1, y1 = self.clip_views.crop_box(view, *self.videos.frame_size(index))
            anchors += [(x0, y0)] * length
            shapes += [(x1 - x0, y1 - y0)] * length
            flips += [int(self.clip_views.flip(view))] * length
        return (*pack_bytes(jpegs), np.asarray(anchors, np.int32), np.asarray(shapes, np.int32),
                np.asarray(flips, np.int32))

    def __getstate__(self):
        return {**self.__dict__, "_table": None, "_cached": (None, None)}


class DaliClipLoader:
    def __init__(self, videos, clip_views: ClipViewSet, plan, device: torch.device, workers: int = 2):
        if Pipeline is None:
            raise ValueError("data.loader=dali needs NVIDIA DALI (nvidia-dali-cuda130); or use data.loader=torch")
        self.device = torch.device(device)
        if self.device.type not in ("cpu", "cuda"):
            raise ValueError(f"data.loader=dali runs on cpu or cuda devices, not {self.device.type}")
        first = plan(0)
        if not first:
            raise ValueError(f"data.loader=dali: the plan for {videos.name}/{videos.split} has no batches")
        self.videos, self.clip_views, self.plan = videos, clip_views, plan
        self.max_batch = max(len(b.indices) for b in first)
        self.labels = torch.as_tensor(videos.labels).to(self.device)
        fd, self._table_path = tempfile.mkstemp(prefix="sskt-clip-epochs-", suffix=".i64")
        os.close(fd)
        self._epochs = np.memmap(self._table_path, np.int64, "w+", shape=(EPOCH_SLOTS,))
        self._dali_epoch = 0  # DALI's epoch counter: +1 at every reset
        self._running = False  # a DALI epoch was started and not yet drained
        self.pipe = self._build(workers)
        self._built = False

    def __len__(self) -> int:
        return len(self.plan(0))

    def _build(self, workers: int):
        gpu = self.device.type == "cuda"
        device_id = (self.device.index if self.device.index is not None else torch.cuda.current_device()) if gpu else None
        # DALI refuses to fork its Python workers once this process has a CUDA context, whichever device the
        # pipeline runs on (a CPU pipeline built after GPU work, as in gpu-check): spawn them then (slower start).
        start_method = "spawn" if torch.cuda.is_initialized() else "fork"
        pipe = Pipeline(batch_size=self.max_batch * self.plan.length, num_threads=max(1, workers),
                        device_id=device_id, prefetch_queue_depth=PREFETCH, seed=0, py_num_workers=max(1, workers),
                        py_start_method=start_method)
        size = self.clip_views.size
        with pipe:
            packed, lengths, anchor, shape, flip = fn.external_source(
                source=_ClipSource(self.videos, self.clip_views, self.plan, self._table_path), num_outputs=5,
                batch=True, batch_info=True, parallel=True,
                dtype=[types.UINT8, types.INT32, types.INT32, types.INT32, types.INT32], ndim=[1, 1, 1, 1, 0])
            jpegs = fn.slice(packed, start=[0], shape=lengths, axes=[0])
            crops = fn.decoders.image_slice(jpegs, anchor, shape, axis_names="WH", device="mixed" if gpu else "cpu",
                                            output_type=types.RGB, adjust_orientation=False)
            crops = fn.flip(crops, horizontal=flip)
            if gpu:
                crops = fn.resize(crops, resize_x=size, resize_y=size, interp_type=types.INTERP_LINEAR, antialias=True)
            pipe.set_outputs(crops)
        pipe.start_py_workers()  # now, before the trainer creates a CUDA context
        return pipe

    def epoch(self, epoch: int):
        batches = self.plan(epoch)
        if max((len(b.indices) for b in batches), default=0) > self.max_batch:
            raise ValueError(f"data.loader=dali: epoch {epoch} has a batch larger than the {self.max_batch} "
                             "clips the pipeline was built for")
        return self._iterate(epoch, batches)

    def _iterate(self, epoch: int, batches):
        self._finish_dali_epoch()
        self._epochs[self._dali_epoch % EPOCH_SLOTS] = epoch  # before DALI may prefetch this epoch
        self._epochs.flush()
        if not self._built:
            self.pipe.build()
            self._built = True
        else:
            self.pipe.reset()
        self._running = True
        token = self._token = object()
        for batch in batches:
            if self._token is not token:
                raise RuntimeError("DaliClipLoader: a newer epoch() was started while this one was unfinished")
            yield self._to_torch(batch)

    def _finish_dali_epoch(self) -> None:
        """Drain what DALI prefetched of an unfinished epoch, up to its StopIteration."""
        if not self._running:
            return
        while True:
            try:
                self.pipe.run()
            except StopIteration:
                break
        self._running = False
        self._dali_epoch += 1

    def _to_torch(self, batch) -> dict[str, torch.Tensor]:
        b, t, size = len(batch.indices), self.plan.length, self.clip_views.size
        if self.device.type == "cuda":
            stream = torch.cuda.current_stream(self.device)
            (pixels,) = self.pipe.run(stream)
            dali = pixels.as_tensor()
            clips = torch.empty(dali.shape(), dtype=torch.uint8, device=self.device)
            feed_ndarray(dali, clips, cuda_stream=stream)
        else:
            (crops,) = self.pipe.run()
            clips = torch.empty((b * t, size, size, 3), dtype=torch.uint8)
            with torch_threads(1):  # DALI's threads decode the next batch meanwhile: no OpenMP spinning against them
                for i in range(b):
                    frames = torch.from_numpy(np.stack([np.asarray(crops[i * t + j]) for j in range(t)]))
                    clips[i * t: (i + 1) * t] = resize_clip(frames, size, flip=False)  # flipped by DALI already
        image = clips.view(b, t, size, size, 3).permute(0, 4, 1, 2, 3)  # [B, 3, T, S, S] (channels_last_3d)
        index = torch.as_tensor(batch.indices, dtype=torch.int64).to(self.device)
        return {"image": image, "label": self.labels[index], "index": index,
                "view": torch.as_tensor(batch.views, dtype=torch.int64).to(self.device),
                "start": torch.as_tensor(batch.starts, dtype=torch.int64).to(self.device), "video": index}

    def close(self) -> None:
        if self._table_path is not None:
            os.unlink(self._table_path)
            self._table_path = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
