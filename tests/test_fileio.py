"""The one atomic writer: modes of what it leaves, whoever writes the temporary file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

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
