"""Which files under a folder are inputs: the one rule every command uses (``encode``/``decode`` on folders,
``raqcodec rd``, training data).

The rule. A folder is searched recursively for files whose extension (any case) is in the set the caller
reads (image files: ``formats.READABLE_EXTENSIONS``; ``decode``: ``.raq``). Files and folders whose name
starts with ``.`` are hidden and skipped. Symbolic links to files are read; symbolic links to folders are
not followed (a note says so: a link can lead out of the tree or round in a circle). Files that are not
regular files (a dangling link, a fifo) are left out with a note, and files of other types are counted in
one note per folder. What is found is sorted by its path relative to the folder (``/``-separated), so the
order is the same on every machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .formats import READABLE_EXTENSIONS


def hidden(name: str) -> bool:
    """A file or folder the search skips."""
    return name.startswith(".")


@dataclass
class Found:
    files: list[PurePosixPath] = field(default_factory=list)  # relative to the folder searched, sorted
    notes: list[str] = field(default_factory=list)  # links not followed, files left out or of other types
    errors: list[str] = field(default_factory=list)  # folders that could not be listed


def walk(root: Path, extensions: Iterable[str] = READABLE_EXTENSIONS, what: str = "not a readable image type") -> Found:
    """The files under ``root`` with one of ``extensions`` (lower case, with the dot), by the module's rule.
    ``what``: how the note on files of other types describes them."""
    extensions = frozenset(extensions)
    found = Found()
    other_types: dict[str, int] = {}

    def unreadable(exc: OSError) -> None:
        found.errors.append(f"{exc.filename}: cannot list directory ({exc.strerror})")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        here = Path(dirpath)
        keep = []
        for name in sorted(dirnames):
            if hidden(name):
                continue
            if (here / name).is_symlink():
                found.notes.append(f"{here / name}: symbolic link to a directory, not followed")
                continue
            keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            path = here / name
            if hidden(name):
                continue
            if path.suffix.lower() not in extensions:
                kind = path.suffix.lower() or "no extension"
                other_types[kind] = other_types.get(kind, 0) + 1
                continue
            if not path.is_file():  # a dangling link, a fifo: reading it would fail or block
                found.notes.append(f"{path}: not a regular file, left out")
                continue
            found.files.append(PurePosixPath(path.relative_to(root).as_posix()))
    if other_types:
        count = sum(other_types.values())
        found.notes.append(
            f"{root}: {count} {'file' if count == 1 else 'files'} skipped, {what} ({', '.join(sorted(other_types))})"
        )
    found.files.sort(key=lambda p: p.as_posix())
    return found


def find_files(inputs: Iterable[Path], extensions: Iterable[str] = READABLE_EXTENSIONS) -> list[Path]:
    """Files named in ``inputs`` (kept whatever their extension) and files found under the folders among
    them (``walk``), in the order given, each file once (by its resolved path). A missing input raises
    FileNotFoundError."""
    found: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found.extend(item / rel for rel in walk(item, extensions).files)
        elif item.exists():
            found.append(item)
        else:
            raise FileNotFoundError(f"{item} does not exist")
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())
