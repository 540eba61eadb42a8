"""One resumable HDF5 writer for long jobs that fill a file block by block.

The source-output cache (engine/source_outputs/image_cache.py) and the video frame store
(pipelines/frame_store.py) are both built this way:

    writer = BlockFile(path, identity, attrs, num_blocks, create=make_datasets, error=MyError)
    file = writer.open()               # the interrupted partial file when it matches, else a new one
    for b in writer.pending():         # blocks not yet done, in order
        ...write block b into file...
        writer.mark_done(b)            # flag + flush: a kill now loses at most the next block
    writer.finish(verify)              # all done, verified, marked complete, renamed into place

The partial file is `.<stem>.partial.h5` next to `path`; it gets the final name only
through foundation.files.publish (fsync + rename), so a half-written file never
looks complete. A partial file whose identity or layout differs is started over.
The file format is pinned to HDF5 1.8 (`LIBVER`): a 1.10 superblock marks a file
open for writing and refuses to reopen it after a crash, which would make a killed
build impossible to resume; fixed bounds also keep the bytes independent of the
h5py/HDF5 defaults.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import h5py
import numpy as np
from h5py import h5d, h5p

from foundation.files import publish

LIBVER = ("v108", "v108")


class BlockFile:
    def __init__(self, path: Path | str, identity: str, attrs: dict, num_blocks: int, *,
                 create: Callable[[h5py.File], None], mismatch: Callable[[h5py.File], str | None] | None = None,
                 error: type[Exception] = RuntimeError, label: str = "file"):
        """`create(file)` makes the datasets of a new partial file; `mismatch(file)` says why an
        existing partial file cannot be continued (None if it can); errors are `error(one line)`."""
        self.path, self.identity, self.attrs, self.num_blocks = Path(path), identity, attrs, num_blocks
        self._create, self._mismatch, self.error, self.label = create, mismatch, error, label
        self.file: h5py.File | None = None

    @property
    def partial_path(self) -> Path:
        return partial_path(self.path)

    def open(self) -> h5py.File:
        partial = self.partial_path
        if partial.exists():
            try:
                file = h5py.File(partial, "r+", libver=LIBVER)
            except OSError as e:
                self._raise_if_locked(e)
                reason = f"cannot be read ({one_line(e)})"
            else:
                reason = self._why_not_continue(file)
                if reason is None:
                    self.file = file
                    return file
                file.close()
            print(f"{self.label} {partial}: {reason}; starting over")
            partial.unlink()
        partial.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.file = self._new(partial)
        except OSError as e:
            self._raise_if_locked(e)
            raise
        return self.file

    def pending(self) -> list[int]:
        return [b for b, done in enumerate(self.file["done"][...]) if not done]

    def mark_done(self, block: int) -> None:
        self.file["done"][block] = 1
        self.file.flush()

    def finish(self, verify: Callable[[h5py.File], None] | None = None) -> Path:
        """Check, mark complete, close and publish under the final name."""
        file = self.file
        if not file["done"][...].all():
            raise self.error(f"{self.label} {self.partial_path}: blocks missing after the build; delete it and rebuild")
        if file.attrs.get("identity") != self.identity:
            raise self.error(f"{self.label} {self.partial_path}: identity attribute lost; delete it and rebuild")
        if verify is not None:
            verify(file)
        file.attrs.modify("complete", np.uint8(1))  # in place: the header keeps its size and bytes
        self.close()
        publish(self.partial_path, self.path)
        return self.path

    def close(self) -> None:
        """A clean close keeps an interrupted partial file resumable."""
        if self.file is not None:
            self.file.close()
            self.file = None

    def _why_not_continue(self, file: h5py.File) -> str | None:
        try:
            if file.attrs.get("identity") != self.identity:
                return "was started for other settings"
            if "done" not in file or file["done"].shape != (self.num_blocks,):
                return "was started with another block layout"
            return self._mismatch(file) if self._mismatch else None
        except KeyError as e:
            return f"is damaged ({one_line(e)})"

    def _new(self, path: Path) -> h5py.File:
        file = h5py.File(path, "w", libver=LIBVER, track_order=False)
        for name in sorted(self.attrs):
            file.attrs[name] = self.attrs[name]
        file.attrs["identity"] = self.identity
        file.attrs["complete"] = np.uint8(0)
        file.create_dataset("done", (self.num_blocks,), np.uint8, dcpl=early_allocation(), fillvalue=0,
                            fill_time="alloc", track_times=False)
        self._create(file)
        file.flush()
        return file

    def _raise_if_locked(self, error: OSError) -> None:
        # HDF5 locks a file open for writing: another process (a second run of the same job) builds it.
        if "lock" in str(error).lower():
            raise self.error(f"{self.label} {self.partial_path} is being built by another process; wait for it, "
                             f"or delete the file if no other process runs") from None


def partial_path(path: Path | str) -> Path:
    path = Path(path)
    return path.with_name(f".{path.stem}.partial.h5")


def early_allocation() -> h5p.PropDCID:
    """Storage allocated at creation: later writes fill bytes in place, so a resumed build ends
    byte-identical to an uninterrupted one (with fill_time 'never' nothing is written up front)."""
    dcpl = h5p.create(h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5d.ALLOC_TIME_EARLY)
    return dcpl


def one_line(e: BaseException) -> str:
    lines = [s.strip() for s in str(e).splitlines() if s.strip()] or [type(e).__name__]
    return lines[0][:300]
