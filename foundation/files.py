"""Durable, atomic file writes: the one way this project publishes a file.

A reader (another rank, a later run, a user after a crash) sees either the old
file or the complete new one, never a half-written one: the bytes go to a
temporary name in the same folder, are fsynced, and are renamed into place;
the folder is fsynced too so that the rename itself survives a power cut.

    write_atomic(path, text_or_bytes)
    with atomic_path(path) as tmp:        # for writers that want a file name (torch.save, h5py, np.savez)
        torch.save(obj, tmp)
    publish(tmp, path)                    # a finished temporary file (or folder) that was written elsewhere

and `file_sha256(path)`, the one content hash of a file (weights, exports), remembered per
(path, inode, size, mtime, ctime) so that checking many runs against one file reads it once.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
from pathlib import Path
from typing import Iterator


def temporary_name(path: Path, tag: str = "tmp") -> Path:
    """A hidden sibling, unique per process: concurrent writers never share a temporary file."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{tag}")


def fsync_path(path: Path) -> None:
    """Flush a file's bytes (or a folder's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, path: Path) -> None:
    """Rename a complete temporary file or folder to its final name, durably."""
    tmp, path = Path(tmp), Path(path)
    if tmp.is_dir():
        for child in tmp.rglob("*"):
            if child.is_file():
                fsync_path(child)
    else:
        fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary file name; on success it becomes `path`, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        publish(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path | str, data: str | bytes) -> None:
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)


def copy_atomic(src: Path | str, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        shutil.copyfile(src, tmp)


def file_sha256(path: Path | str) -> str:
    stat = os.stat(path)
    return _file_sha256(str(Path(path).resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


@functools.lru_cache(maxsize=256)
def _file_sha256(path: str, *stamp: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def replace_marked(path: Path | str, name: str, text: str) -> bool:
    """Replace what lies between the lines `<!-- name -->` and `<!-- /name -->` of a text file (atomically);
    False, the file untouched, when it does not hold exactly one such pair."""
    path = Path(path)
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    old = path.read_text()
    if old.count(start) != 1 or old.count(end) != 1 or old.index(start) > old.index(end):
        return False
    head, rest = old.split(start, 1)
    write_atomic(path, f"{head}{start}\n{text}{end}{rest.split(end, 1)[1]}")
    return True
