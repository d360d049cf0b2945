"""Writing files so that nothing partial is ever left under the real name: the one atomic writer.

``atomic_path`` hands out a temporary name beside the target (same folder, so the rename is atomic),
created with the umask's permissions (or the mode of the file it replaces, so that overwriting never
widens a private file); the caller writes it, the data are synced, and it is renamed onto the target.
A failure, an exception or a signal (``raqcodec.interrupts``) removes it.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import interrupts

TEMP_SUFFIX = ".tmp"  # temporary names: .<name>.<pid>.<8 hex digits>.tmp (raqcodec.batch sweeps stale ones)
TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")  # the names temp_name makes


def temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


@contextmanager
def atomic_path(path: Path, mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; synced and renamed onto ``path`` when the block
    succeeds, removed when it fails, so a crash, an error or a signal never leaves a partial file under
    the real name. ``mode``: the permissions of the result; by default those of the file replaced, else
    what the umask allows (0666 & ~umask), as any other program's new files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keep = mode if mode is not None else _existing_mode(path)
    while True:
        tmp = temp_name(path)
        with interrupts.temporary(tmp):  # registered before it exists: a signal cannot orphan it
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
            except FileExistsError:
                continue
            try:
                os.close(fd)
                wanted = keep if keep is not None else stat.S_IMODE(os.stat(tmp).st_mode)
                yield tmp
                # a writer that replaces the file instead of writing into it (safetensors does) would
                # otherwise leave its own mode (0600)
                os.chmod(tmp, wanted)
                _sync(tmp)
                os.replace(tmp, path)
                _sync_directory(path.parent)
            finally:
                tmp.unlink(missing_ok=True)
        return


def _existing_mode(path: Path) -> int | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return stat.S_IMODE(info.st_mode) if stat.S_ISREG(info.st_mode) else None


def _sync(path: Path) -> None:
    """The rename must not outrun the data (a power loss would leave an empty file under the name)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not possible everywhere (Windows); the rename itself is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def nearest_existing(path: Path) -> Path:
    """``path`` or the closest of its parents that exists."""
    here = Path(os.path.abspath(path))
    while not os.path.lexists(here) and here.parent != here:
        here = here.parent
    return here


def check_writable(directory: Path) -> None:
    """Raise OSError, naming the real obstacle, unless files can be created in ``directory`` (made if
    missing). Probes with a real file: permission bits say nothing to root, to read-only mounts or to
    ACLs."""
    existing = nearest_existing(directory)
    # name the obstacle the way the user named the directory: relative stays relative
    shown = existing if Path(directory).is_absolute() else Path(os.path.relpath(existing))
    if not existing.is_dir():
        raise OSError(f"cannot write into {directory}: {shown} is not a directory")
    probe = temp_name(existing / "write-probe")
    try:
        with interrupts.temporary(probe):
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(probe)
    except OSError as exc:
        raise OSError(f"cannot write into {directory}: {shown} is not writable ({exc.strerror})") from None
