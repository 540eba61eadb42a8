"""The one atomic writer: a reader sees the old file or the whole new one, never a part; the one file hash."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from foundation.files import atomic_path, copy_atomic, file_sha256, temporary_name, write_atomic


def test_write_atomic_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "file.txt"
    write_atomic(path, "first")
    write_atomic(path, b"second")
    assert path.read_text() == "second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.txt"]  # no temporary left


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "file.bin"
    write_atomic(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_atomic_path_publishes_a_folder(tmp_path):
    path = tmp_path / "state"
    with atomic_path(path) as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("a")
    assert (path / "a.txt").read_text() == "a"
    copy_atomic(path / "a.txt", tmp_path / "b.txt")
    assert (tmp_path / "b.txt").read_text() == "a"


def test_file_sha256_is_the_content_hash_and_follows_a_replaced_file(tmp_path):
    path = tmp_path / "weights.pt"
    write_atomic(path, b"a" * 3_000_000)  # over one read chunk
    assert file_sha256(path) == hashlib.sha256(b"a" * 3_000_000).hexdigest()
    assert file_sha256(str(path)) == file_sha256(tmp_path / "." / "weights.pt")  # one file, however named
    write_atomic(path, b"b" * 3_000_000)  # same path, same size, other bytes (a retrained source)
    assert file_sha256(path) == hashlib.sha256(b"b" * 3_000_000).hexdigest()


@pytest.mark.parametrize("write", ["write_atomic", "atomic_path"])
def test_durable_order_write_fsync_rename_fsync_folder(tmp_path, monkeypatch, write):
    """The bytes are complete and fsynced under the temporary name before the rename, and the folder is
    fsynced after it: renaming first could publish a name whose bytes a power cut then loses."""
    import os
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        events.append(("fsync", target, target.read_bytes() if target.is_file() else None))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = tmp_path / "out.bin"
    if write == "write_atomic":
        write_atomic(path, b"payload")
    else:
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"payload")
    tmp = temporary_name(path)
    assert events == [("fsync", tmp, b"payload"), ("replace", tmp, path), ("fsync", tmp_path, None)]
