"""Frozen-source outputs computed once, stored in HDF5 and reused by every later run.

A source's logits on a training image never change, yet computing them costs far more
than the target's step. The target sees each sample in one of K deterministic views
(pipelines.views), so a cache holds every view of every sample:

    <root>/<source>-<split>-<identity[:16]>.h5
        outputs   float16 [N, K, C]   the source's logits on view k of sample n
        done      uint8 [blocks]      build progress, one flag per block of samples
        attrs     identity (+ the fields it hashes, for humans), complete

The identity is a sha256 over everything that determines the outputs: the source's
fingerprint (arch, weights, resize, normalization, classes), the images' content,
the view set and the stored dtype. Any change gives another file name, so a stale
cache is never read; a wrong, truncated or unfinished file is detected when opened.

A build writes `.<file>.partial.h5`, flushes after every block and resumes from the
blocks already done; the file gets its final name only when complete and verified.
Its bytes depend only on the inputs, not on interruptions or the process count.
"""
from __future__ import annotations

import hashlib
import json
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from filelock import FileLock, Timeout
from h5py import h5s

from engine.progress import Progress
from pipelines.datasets.base import ImageSet
from foundation.h5blocks import BlockFile, early_allocation, one_line, partial_path
from pipelines.render import render_images
from pipelines.views import ViewSet
from foundation.errors import UserError

FORMAT_VERSION = "sskt-source-cache-v1"  # bump when the layout or the way outputs are computed changes
DTYPE = "float16"
CHUNK_BYTES = 32 << 10  # target chunk size, see choose_layout
BLOCK_IMAGES = 4096  # (sample, view) pairs per build block: at most this much work is lost on a kill
BUILD_COMMAND = "python -m tools.cache_sources --config <experiment.yaml>"


class CacheError(UserError):
    """One line naming the cache file at fault and what to do."""


# ---------------------------------------------------------------- identity and layout

@dataclass(frozen=True)
class CacheSpec:
    """What a cache file must hold and where it lives."""
    source: str
    identity: str
    attrs: dict  # the hashed fields and the identity, stored as file attributes
    path: Path
    shape: tuple[int, int, int]  # N, K, C

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(DTYPE).itemsize

    @property
    def partial_path(self) -> Path:
        return partial_path(self.path)


def cache_spec(source, images: ImageSet, view_set: ViewSet, root: Path | str) -> CacheSpec:
    key = {
        "format": FORMAT_VERSION,
        "source_fingerprint": source.fingerprint(),
        "images_fingerprint": images.fingerprint,
        "images_name": images.name,
        "images_split": images.split,
        "images_count": len(images),
        "view_set_fingerprint": view_set.fingerprint(),
        "dtype": DTYPE,
    }
    identity = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    attrs = {**key, "identity": identity, "source_name": source.name, "views": view_set.count,
             "view_set": view_set.describe(), "num_classes": source.num_classes}
    path = Path(root) / f"{source.name}-{images.split}-{identity[:16]}.h5"
    return CacheSpec(source.name, identity, attrs, path, (len(images), view_set.count, source.num_classes))


@dataclass(frozen=True)
class Layout:
    chunks: tuple[int, int, int]
    block_samples: int  # samples per build block (all their views), a multiple of chunks[0]

    def blocks(self, num_samples: int) -> list[range]:
        return [range(lo, min(lo + self.block_samples, num_samples))
                for lo in range(0, num_samples, self.block_samples)]


def choose_layout(shape: tuple[int, int, int], block_samples: int | None = None) -> Layout:
    """Chunks of about CHUNK_BYTES, cut along views when a sample's K views exceed that.

    Training reads random (sample, view) rows, and HDF5 reads whole chunks: a chunk of
    (1, k, C) with k dividing K costs at most ~32 KiB per lookup, where a sample-block
    chunk (64, K, C) would read 64*K rows (20 MB for K=162, C=1000) to return one.
    Small rows are grouped over samples instead, to keep the chunk index small.
    Blocks cover whole chunks, so building never rewrites a chunk.
    """
    n, k, c = shape
    row = c * np.dtype(DTYPE).itemsize
    if k * row >= CHUNK_BYTES:
        views = max(d for d in range(1, k + 1) if k % d == 0 and (d * row <= CHUNK_BYTES or d == 1))
        chunk_samples = 1
    else:
        views, chunk_samples = k, max(1, CHUNK_BYTES // (k * row))
    wanted = block_samples or math.ceil(BLOCK_IMAGES / k)
    chunk_samples = min(chunk_samples, wanted, n)
    block = min(math.ceil(wanted / chunk_samples) * chunk_samples, n)
    return Layout((chunk_samples, views, c), block)


# ---------------------------------------------------------------- opening (and building when needed)

def open_cached_source(source, images: ImageSet, view_set: ViewSet, cache_cfg, mode: str, accelerator=None, *,
                       block_samples: int | None = None, progress: bool = True) -> "CachedSource":
    """The provider for `source` in mode auto|required|rebuild, building the cache where needed.

    Rank 0 alone checks and deletes files; every rank builds its share and waits for the file.
    """
    if mode not in ("auto", "required", "rebuild"):
        raise ValueError(f"cache mode must be auto, required or rebuild (off is a live source), got {mode!r}")
    if len(images) == 0:
        raise ValueError(f"source '{source.name}': nothing to cache, the {images.name} {images.split} split is empty")
    spec = cache_spec(source, images, view_set, cache_cfg.root)
    with _build_lock(spec, accelerator):
        built = _on_main(accelerator, lambda: _decide(spec, mode)) == "build"
        if built:
            build_cache(source, images, view_set, spec.path, cache_cfg.batch_size, accelerator, progress,
                        block_samples=block_samples)
    device = accelerator.device if accelerator is not None else torch.device("cpu")
    provider = CachedSource(spec.path, spec.shape, device, memory_bytes=int(cache_cfg.memory_gb * 2**30))
    provider.origin = "built" if built else "reused"
    return provider


@contextmanager
def _build_lock(spec: CacheSpec, accelerator):
    """Held by rank 0 of a job while it checks and builds `spec`'s file.

    Two jobs sharing a cache folder (seeds of one table submitted at once) must not both
    build the same file: the second waits here, then finds the first one's file valid.
    """
    if accelerator is not None and not accelerator.is_main_process:
        yield
        return
    spec.path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(spec.path.with_name(f".{spec.path.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"source cache {spec.path}: another process is building it; waiting for it to finish")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _decide(spec: CacheSpec, mode: str) -> str:
    """'valid' or 'build'; CacheError when `required` finds no valid file."""
    if mode == "rebuild":
        spec.path.unlink(missing_ok=True)
        spec.partial_path.unlink(missing_ok=True)
        return "build"
    problem = check_cache_file(spec)
    if problem is None:
        return "valid"
    if mode == "required":
        raise CacheError(f"source '{spec.source}': cache file {spec.path} {problem} (cache: required); "
                         f"build it with `{BUILD_COMMAND}`")
    if spec.path.exists():
        print(f"source cache {spec.path}: {problem}; deleting it and rebuilding")
        spec.path.unlink()
    return "build"


def check_cache_file(spec: CacheSpec) -> str | None:
    """None when `spec.path` is a complete cache of exactly `spec`, else why not (for one line)."""
    if not spec.path.exists():
        return "does not exist"
    try:
        with h5py.File(spec.path, "r") as f:
            attrs = f.attrs
            if "identity" not in attrs or "complete" not in attrs:
                return "lacks its identity attributes (not a source cache, or damaged)"
            if attrs["identity"] != spec.identity:
                return f"holds outputs for other settings (identity {attrs['identity'][:16]}..., expected {spec.identity[:16]}...)"
            if int(attrs["complete"]) != 1:
                return "is not marked complete"
            outputs = f.get("outputs")
            if not isinstance(outputs, h5py.Dataset) or outputs.shape != spec.shape or outputs.dtype != DTYPE:
                found = (outputs.shape, str(outputs.dtype)) if isinstance(outputs, h5py.Dataset) else "nothing"
                return f"has outputs {found}, expected {spec.shape} {DTYPE}"
    except (OSError, KeyError, ValueError) as e:  # h5py raises OSError for truncated or garbled files
        return f"cannot be read ({one_line(e)})"
    return None


# ---------------------------------------------------------------- building

def build_cache(source, images: ImageSet, view_set: ViewSet, path: Path | str, batch_size: int, accelerator=None,
                progress: bool = True, *, block_samples: int | None = None) -> Path:
    """Compute `source` on every (sample, view) of `images` into the HDF5 file `path`.

    Under several processes, rank r computes the pending blocks r, r + world, ...; rank 0
    gathers and writes them in order, so the file is the same whatever the process count.
    """
    spec = cache_spec(source, images, view_set, Path(path).parent)
    spec = CacheSpec(spec.source, spec.identity, spec.attrs, Path(path), spec.shape)
    layout = choose_layout(spec.shape, block_samples)
    blocks = layout.blocks(len(images))
    main = accelerator is None or accelerator.is_main_process
    device = accelerator.device if accelerator is not None else torch.device("cpu")
    source = source.to(device) if isinstance(source, torch.nn.Module) else source

    writer = BlockFile(spec.path, spec.identity, {**spec.attrs, "block_samples": layout.block_samples}, len(blocks),
                       create=lambda f: f.create_dataset("outputs", spec.shape, DTYPE, chunks=layout.chunks,
                                                         dcpl=early_allocation(), fill_time="never", track_times=False),
                       mismatch=lambda f: _layout_mismatch(f, spec, layout), error=CacheError, label="source cache")

    def open_partial() -> list[int]:
        writer.open()
        return writer.pending()

    pending = _on_main(accelerator, open_partial)  # the blocks still to compute, known to every rank
    if main:
        n, k, c = spec.shape
        print(f"source cache {spec.path}: building {n} samples x {k} views x {c} classes, {DTYPE} "
              f"= {human_bytes(spec.nbytes)} ({len(blocks) - len(pending)}/{len(blocks)} blocks already done)")
    world = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    todo = sum(len(blocks[b]) for b in pending) * view_set.count
    bar = Progress(len(images) * view_set.count, f"caching {spec.source}", "img",
                   initial=len(images) * view_set.count - todo, unit_scale=True, enabled=progress and main)
    try:
        for start in range(0, len(pending), world):
            turn = pending[start: start + world]
            mine = blocks[turn[rank]] if rank < len(turn) else None
            outputs = _compute_block(source, images, view_set, mine, batch_size, device, spec) if mine else None
            if world > 1:
                outputs = _gather_blocks(accelerator, outputs, layout.block_samples, spec.shape[1:], device)
            if main:
                for j, b in enumerate(turn):
                    block = blocks[b]
                    writer.file["outputs"][block.start: block.stop] = (outputs[j] if world > 1 else outputs)[: len(block)].numpy()
                    writer.mark_done(b)
                    if bar.update(len(block) * view_set.count):
                        bar.show()
        bar.close()  # before the lines below, so they do not interleave with the bar
        if main:
            writer.finish(lambda f: _verify(f, spec, layout))
    finally:
        bar.close()
        writer.close()
    if main:
        print(f"source cache {spec.path}: complete ({human_bytes(spec.path.stat().st_size)} on disk)")
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return spec.path


def _layout_mismatch(file: h5py.File, spec: CacheSpec, layout: Layout) -> str | None:
    outputs = file.get("outputs")
    if not isinstance(outputs, h5py.Dataset) or outputs.shape != spec.shape or outputs.chunks != layout.chunks:
        return "was started with another block layout"
    return None


@torch.inference_mode()
def _compute_block(source, images: ImageSet, view_set: ViewSet, block: range, batch_size: int,
                   device: torch.device, spec: CacheSpec) -> torch.Tensor:
    """float16 [len(block), K, C] on the CPU; batches depend on the block only, never on the rank."""
    k = view_set.count
    samples = np.repeat(np.arange(block.start, block.stop), k)
    views = np.tile(np.arange(k), len(block))
    pieces = []
    for lo in range(0, len(samples), batch_size):
        pixels = render_samples(images, samples[lo: lo + batch_size], views[lo: lo + batch_size], view_set)
        pieces.append(source(pixels.to(device)).to(torch.float16).cpu())
    outputs = torch.cat(pieces).view(len(block), k, -1)
    if outputs.shape[-1] != spec.shape[-1]:
        raise CacheError(f"source '{spec.source}' returned {outputs.shape[-1]} classes, expected {spec.shape[-1]}")
    if not torch.isfinite(outputs).all():
        raise CacheError(f"source '{spec.source}' gave non-finite outputs (or logits beyond float16's 65504) on "
                         f"samples {block.start}..{block.stop - 1}; its cache cannot be built, use cache: off")
    return outputs


def render_samples(images, samples: np.ndarray, views: np.ndarray, view_set) -> torch.Tensor:
    """uint8 [N, 3, H, W]: an ImageSet's views (pipelines.render), or what another sample set renders
    itself (engine.source_outputs.frame_cache.CachedFrames: video frames in clip views)."""
    own = getattr(images, "render_views", None)
    return own(samples, views) if own is not None else render_images(images, samples, views, view_set)


def _gather_blocks(accelerator, outputs: torch.Tensor | None, block_samples: int, row_shape, device) -> torch.Tensor:
    """Every rank's block (zeros where it had none), padded to one size: [world, block_samples, K, C]."""
    padded = torch.zeros((block_samples, *row_shape), dtype=torch.float16)
    if outputs is not None:
        padded[: len(outputs)] = outputs
    gathered = accelerator.gather(padded.to(device)).cpu()
    return gathered.view(accelerator.num_processes, block_samples, *row_shape)


def _verify(file: h5py.File, spec: CacheSpec, layout: Layout) -> None:
    outputs = file["outputs"]
    for block in layout.blocks(spec.shape[0]):  # also re-checks blocks written by an earlier, interrupted build
        if not np.isfinite(outputs[block.start: block.stop]).all():
            raise CacheError(f"source cache {spec.partial_path}: non-finite values in samples "
                             f"{block.start}..{block.stop - 1}; delete it and rebuild")


def _on_main(accelerator, fn):
    """fn() on rank 0, its (picklable) result, or its CacheError, on every rank: no rank waits forever."""
    if accelerator is None or accelerator.num_processes == 1:
        return fn()
    from accelerate.utils import broadcast_object_list
    box = [None]
    if accelerator.is_main_process:
        try:
            box = [("ok", fn())]
        except CacheError as e:
            box = [("error", str(e))]
    broadcast_object_list(box, from_process=0)
    kind, value = box[0]
    if kind == "error":
        raise CacheError(value)
    return value


# ---------------------------------------------------------------- reading

class CachedSource:
    """A provider: the stored outputs of the batch's (index, view) pairs, float32 [B, C] on the batch's device.

    The file is opened on the first lookup, in the training process: never before DataLoader
    workers fork, never in a worker. A cache that fits `memory_bytes` is loaded whole onto
    `device`; a larger one is read row by row through HDF5.
    """

    def __init__(self, path: Path, shape: tuple[int, int, int], device: torch.device, memory_bytes: int):
        self.path, self.shape, self.device = Path(path), tuple(shape), torch.device(device)
        self.origin = "reused"  # or "built" (set by open_cached_source): provenance in run summaries
        self.nbytes = math.prod(self.shape) * np.dtype(DTYPE).itemsize
        self.in_memory = self.nbytes <= memory_bytes
        self._rows: torch.Tensor | None = None  # [N * K, C] float16 on `device`, memory path
        self._file: h5py.File | None = None

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        index, view = batch["index"], batch["view"]
        if self.in_memory:
            if self._rows is None:
                self._rows = self._load()
            rows = index.to(self.device) * self.shape[1] + view.to(self.device)
            out = self._rows.index_select(0, rows)  # a plain row gather: cheaper than 2-D advanced indexing
        else:
            out = torch.from_numpy(self._read_rows(index.cpu().numpy(), view.cpu().numpy()))
        return out.to(index.device).float()

    def _load(self) -> torch.Tensor:
        with h5py.File(self.path, "r") as f:
            outputs = np.empty(self.shape, dtype=DTYPE)
            f["outputs"].read_direct(outputs)
        return torch.from_numpy(outputs).view(-1, self.shape[2]).to(self.device)

    def _read_rows(self, index: np.ndarray, view: np.ndarray) -> np.ndarray:
        dataset = self._dataset()
        n, k, c = self.shape
        # Unique rows in file order: each is read once, and chunks are visited sequentially.
        rows, inverse = np.unique(index.astype(np.int64) * k + view.astype(np.int64), return_inverse=True)
        out = np.empty((len(rows), c), dtype=DTYPE)
        file_space, memory_space = dataset.id.get_space(), h5s.create_simple((1, 1, c))
        for j, row in enumerate(rows.tolist()):  # one low-level read per row: no high-level selection overhead
            file_space.select_hyperslab((row // k, row % k, 0), (1, 1, c))
            dataset.id.read(memory_space, file_space, out[j: j + 1].reshape(1, 1, c))
        return out[inverse.reshape(-1)]

    def _dataset(self) -> h5py.Dataset:
        if self._file is None:
            # Random rows rarely hit the same chunk twice across batches (the OS page cache serves
            # re-reads), so the chunk cache only needs one batch's chunks: 256 of them, within [1, 64] MiB.
            with h5py.File(self.path, "r") as f:
                chunk_bytes = math.prod(f["outputs"].chunks) * np.dtype(DTYPE).itemsize
            nbytes = min(max(256 * chunk_bytes, 1 << 20), 64 << 20)
            self._file = h5py.File(self.path, "r", rdcc_nbytes=nbytes, rdcc_w0=1.0,
                                   rdcc_nslots=_prime_at_least(100 * (nbytes // chunk_bytes)))
        return self._file["outputs"]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._rows = None

    def __getstate__(self):
        # An open HDF5 handle must not travel to another process; it reopens lazily there.
        return {**self.__dict__, "_file": None, "_rows": None}


def _prime_at_least(n: int) -> int:
    # HDF5 hashes chunks into rdcc_nslots slots; a prime count spreads them best (h5py docs).
    n = max(n, 2)
    while any(n % d == 0 for d in range(2, math.isqrt(n) + 1)):
        n += 1
    return n


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
