"""What is already at an output path (raqcodec's own or not, complete or not), whether it may be replaced,
and the temporary files a killed run left."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..io.atomic import TEMP_NAME
from ..io.bitstream import MAGIC, read_header, read_stream
from .jobs import DECODE, STALE_AFTER_S, Job

# -- outputs: raqcodec's own or not, complete or not, inside the tree, stale temporary files --------------


@dataclass(frozen=True)
class Existing:
    """A file already at an output path."""

    ours: bool  # raqcodec wrote it (formats: the .raq magic, or the Software marker of a decoded image)
    problem: str | None = None  # ours but incomplete: why

    @property
    def complete(self) -> bool:
        return self.ours and self.problem is None


def existing_output(kind: str, path: Path) -> Existing | None:
    """What is at an output path: None when nothing is. Encode: a .raq file starts with the magic, and is
    complete when its container parses (header, sizes and CRC; no decoding). Decode: the image carries
    raqcodec's marker, and is complete when it decodes (a PNG: verify() and its closing IEND chunk)."""
    if not os.path.lexists(path):
        return None
    if not path.is_file():
        return Existing(ours=False)
    if kind == DECODE:
        from ..io.writing import written_by_raqcodec

        ours, problem = written_by_raqcodec(path)
        return Existing(ours, problem)
    try:
        with open(path, "rb") as fh:
            if fh.read(len(MAGIC)) != MAGIC:
                return Existing(ours=False)
    except OSError as exc:
        return Existing(ours=False) if not os.path.exists(path) else Existing(True, exc.strerror or str(exc))
    try:
        read_header(read_stream(path))  # the one bounded .raq reader: an absurd size is refused unread
        return Existing(True)
    except Exception as exc:  # noqa: BLE001 - any defect of our own file means: not complete, redo it
        return Existing(True, str(exc) or type(exc).__name__)


def ensure_inside(path: Path, root: Path) -> None:
    """Refuse an output whose folder resolves outside ``root`` (a symbolic link inside the output tree)."""
    real_root = os.path.realpath(root)
    real_parent = os.path.realpath(path.parent)
    if os.path.commonpath([real_root, real_parent]) != real_root:
        raise OSError(f"{path} would be written outside {root} ({path.parent} leads to {real_parent}); refusing")


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate it there; never sweep
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, someone else's
        return True
    return True


def temp_files(directories: Iterable[Path], suffix: str, recursive: bool) -> Iterator[tuple[Path, int]]:
    """(path, writer pid) of ``io.atomic.atomic_path`` temporary files of ``suffix`` outputs."""
    for directory in directories:
        walker = os.walk(directory) if recursive else [(str(directory), [], _names(directory))]
        for dirpath, _, filenames in walker:
            for name in filenames:
                match = TEMP_NAME.match(name)
                if match and match["name"].endswith(suffix):
                    yield Path(dirpath) / name, int(match["pid"])


def _names(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []


def sweep_stale_temps(jobs: Sequence[Job], suffix: str, now: float | None = None) -> list[Path]:
    """Remove temporary files left by killed runs (SIGKILL, power loss): their writer is not alive and
    they have not been written for STALE_AFTER_S. Output trees are searched whole, other folders only
    where an output goes."""
    now = time.time() if now is None else now
    roots = {job.root for job in jobs if job.root is not None and job.root.is_dir()}
    beside = {job.output.parent for job in jobs if job.root is None and not job.stdout}
    removed = []
    for recursive, dirs in ((True, roots), (False, beside)):
        for path, pid in temp_files(sorted(dirs), suffix, recursive):
            try:
                if not _pid_alive(pid) and now - path.lstat().st_mtime > STALE_AFTER_S:
                    path.unlink()
                    removed.append(path)
            except OSError:
                continue
    return removed


def _remove_temps_of(pid: int, directory: Path, suffix: str) -> None:
    """After a worker was stopped: anything it left half-written (a kill -9 between write and rename)."""
    for path, owner in temp_files([directory], suffix, recursive=False):
        if owner == pid:
            path.unlink(missing_ok=True)


def refusal(job: Job, kind: str, force: bool, batch: bool, existing: Existing | None = None) -> str | None:
    """Why the file at ``job.output`` must not be replaced, or None. raqcodec replaces a file it did not
    write only when that file was named with -o FILE and --force was given: a derived name (beside the
    input, or mirrored under -o DIR) can be the user's original, e.g. photo.png beside photo.raq."""
    if job.stdout:
        return None
    existing = existing if existing is not None else existing_output(kind, job.output)
    if existing is None or existing.ours or (job.named and force):
        return None
    head = f"{job.output} exists and was not written by raqcodec"
    if job.named:
        return f"{head}; pass --force (-f) to replace it"
    way_out = "choose another output directory with -o DIR" if batch else "name another output with -o FILE"
    forced = " (--force replaces only what raqcodec wrote, or a file named with -o)" if force else ""
    return f"{head} and may be an original; not replacing it{forced}: {way_out}"
