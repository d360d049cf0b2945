"""The one atomic writer: modes of what it leaves, whoever writes the temporary file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from raqcodec.io.atomic import atomic_path


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_writer_that_recreates_the_file_still_gets_the_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        target = tmp_path / "model.bin"
        with atomic_path(target) as tmp:
            tmp.unlink()  # what safetensors does: a new file, with its own private mode
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
        assert _mode(target) == 0o640
    finally:
        os.umask(old)


def test_replacing_keeps_the_mode_of_the_file_replaced(tmp_path: Path) -> None:
    target = tmp_path / "private.raq"
    target.write_bytes(b"old")
    os.chmod(target, 0o600)
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert _mode(target) == 0o600 and target.read_bytes() == b"new"


def test_the_data_and_the_folder_are_synced_before_and_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DESIGN.md's promise: a power loss never leaves an empty file under the real name. The file's data
    reach the disk before the rename, the folder's entry after it."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src: os.PathLike[str] | str, dst: os.PathLike[str] | str) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "out.raq"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"data")
    assert events == ["fsync file", "rename", "fsync dir"] and target.read_bytes() == b"data"
