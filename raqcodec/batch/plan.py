"""From command-line inputs to jobs: files, folders (``raqcodec.io.finder``'s rule) and glob patterns, each
mapped to its output; and the stable shards of a plan."""

from __future__ import annotations

import glob
import hashlib
import os
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from ..errors import BatchError
from ..io import formats
from ..io.finder import walk
from .jobs import DECODE, ENCODE, FOUND_BY_EXTENSION, GLOB_MAGIC, STDIO, SUFFIX, Job, Plan

# -- planning ---------------------------------------------------------------------------------------------


def plan_key(rel: PurePosixPath) -> str:
    # NFC: the same tree copied between macOS (NFD names) and Linux shards the same way.
    return unicodedata.normalize("NFC", rel.as_posix())


def _glob_base(pattern: str) -> Path:
    """The leading folders of a pattern without wildcards: matches are mirrored relative to it."""
    fixed = []
    for part in Path(pattern).parts:
        if GLOB_MAGIC.search(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _through_link(root: Path, rel: PurePosixPath) -> Path | None:
    """The first folder between root and rel that is a symbolic link (glob's ** follows them), or None."""
    here = root
    for part in rel.parts[:-1]:
        here = here / part
        if here.is_symlink():
            return here
    return None


def find_inputs(args: Sequence[str], kind: str) -> tuple[list[tuple[Path, PurePosixPath, bool]], Plan]:
    """(root, path relative to root, named explicitly) of every input, in the order of ``args``."""
    extensions = FOUND_BY_EXTENSION[kind]
    plan = Plan(jobs=[], is_batch=len(args) > 1)
    found: list[tuple[Path, PurePosixPath, bool]] = []

    def add_dir(root: Path, prefix: PurePosixPath, shown: str) -> None:
        what = "not a readable image type" if kind == ENCODE else "not .raq files"
        walked = walk(root / prefix, extensions, what)
        plan.notes.extend(walked.notes)
        plan.errors.extend(walked.errors)
        files = walked.files
        if not files:
            plan.notes.append(f"no {', '.join(sorted(extensions))} files under {shown}")
        found.extend((root, prefix / rel, False) for rel in files)

    if STDIO in args and len(args) > 1:
        raise BatchError("- (standard input) must be the only input")
    for arg in args:
        path = Path(arg)
        if arg == STDIO:
            found.append((Path("."), PurePosixPath(STDIO), True))  # read from stdin: source shown as <stdin>
        elif path.is_dir():
            plan.is_batch = True
            add_dir(path, PurePosixPath(), arg)
        elif os.path.lexists(arg):
            found.append((path.parent, PurePosixPath(path.name), True))  # named: tried whatever its extension
        elif GLOB_MAGIC.search(arg):
            plan.is_batch = True
            base = _glob_base(arg)
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                raise BatchError(f"no files match {arg!r}")
            for match in matches:
                rel = PurePosixPath(Path(match).relative_to(base).as_posix())
                if ".." in rel.parts:
                    raise BatchError(f"{match}: '..' in a matched path would leave the output directory")
                link = _through_link(base, rel)
                if link is not None:
                    plan.notes.append(f"{match}: under {link}, a symbolic link to a directory; not followed")
                elif Path(match).is_dir():
                    add_dir(base, rel, match)
                else:
                    found.append((base, rel, False))
        else:
            raise BatchError(f"{arg} does not exist")
    return found, plan


def plan(args: Sequence[str], kind: str, output: str | None) -> Plan:
    """Every input and its output. ``output``: None (beside each input), ``-`` (stdout, one input), a
    file (one input named explicitly), or a directory under which the inputs' trees are mirrored.
    Raises BatchError (a usage error) for requests that cannot be right: several inputs with a file
    name for -o, stdin without -o, a decoded image's extension that names no format."""
    found, result = find_inputs(args, kind)
    suffix = SUFFIX[kind]
    single_file = len(args) == 1 and len(found) == 1 and found[0][2]
    stdin = single_file and args[0] == STDIO
    if output == STDIO and not single_file:
        raise BatchError("-o - (standard output) takes exactly one input file")
    if stdin and output is None:
        raise BatchError("reading standard input (-) needs -o FILE, or -o - for standard output")
    named_dir = output is not None and output != STDIO and (Path(output).is_dir() or output.endswith(("/", os.sep)))
    if output is not None and output != STDIO and not single_file and not named_dir:
        _check_output_directory(output, kind)
    to_dir = named_dir or (output is not None and output != STDIO and not single_file)
    if stdin and to_dir:
        raise BatchError("reading standard input (-) needs -o FILE or -o -, not a directory")
    if single_file and output is not None and output != STDIO and not to_dir and kind == DECODE:
        try:
            formats.output_format(output)
        except ValueError as exc:
            raise BatchError(str(exc)) from None
    seen_sources: set[str] = set()
    for root, rel, _ in found:
        source = root.joinpath(*rel.parts)
        if stdin:
            assert output is not None
            result.jobs.append(
                Job(source, Path(output), STDIO, None, named=output != STDIO, stdin=True, stdout=output == STDIO)
            )
            continue
        if os.path.abspath(source) in seen_sources:  # the same file named twice (a folder and a file in it)
            continue
        seen_sources.add(os.path.abspath(source))
        if output is None:
            result.jobs.append(Job(source, source.with_suffix(suffix), plan_key(rel), None))
        elif output == STDIO:
            result.jobs.append(Job(source, Path(STDIO), plan_key(rel), None, stdout=True))
        elif not to_dir:
            result.jobs.append(Job(source, Path(output), plan_key(rel), None, named=True))
        else:
            out = Path(output)
            result.jobs.append(Job(source, out.joinpath(*rel.with_suffix(suffix).parts), plan_key(rel), out))
    if not result.jobs and not result.errors:
        shown = ", ".join(args)
        raise BatchError(f"no input files ({', '.join(sorted(FOUND_BY_EXTENSION[kind]))}) under {shown}")
    check_collisions([job for job in result.jobs if not (job.stdin or job.stdout)])
    return result


def _check_output_directory(output: str, kind: str) -> None:
    """Several inputs (or a directory or a pattern) need a directory for -o: refuse an existing file, and a
    new name that reads as an output file (the user meant one file, and would get a directory of that name)."""
    if os.path.lexists(output):
        raise BatchError(
            f"-o {output}: several inputs (or a directory, or a pattern) need an output directory, "
            f"and {output} is a file"
        )
    looks_like_file = (
        Path(output).suffix.lower() == formats.RAQ_EXTENSION
        if kind == ENCODE
        else Path(output).suffix.lower() in formats.OUTPUT_FORMATS
    )
    if looks_like_file:
        raise BatchError(
            f"-o {output}: several inputs (or a directory, or a pattern) need an output directory, "
            f"not a file name (end it with / to make a directory of that name)"
        )


def check_collisions(jobs: Sequence[Job]) -> None:
    """Two inputs with one output, or an output that is an input, are refused before anything runs."""
    sources = {os.path.realpath(job.source): job.source for job in jobs}
    outputs: dict[str, Path] = {}
    for job in jobs:
        key = os.path.normcase(os.path.realpath(job.output))
        if key in outputs:
            raise BatchError(f"{outputs[key]} and {job.source} would both be written to {job.output}")
        outputs[key] = job.source
        if os.path.realpath(job.output) in sources:
            raise BatchError(f"output {job.output} is the input {sources[os.path.realpath(job.output)]}")


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` (1-based) to (I, N); ValueError with a one-line reason otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"expected I/N such as 1/4, got {text!r}")
    index, count = int(match[1]), int(match[2])
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"I/N needs 1 <= I <= N, got {text!r}")
    return index, count


def shard_of(key: str, count: int) -> int:
    """0-based shard of an input: sha256 of its relative path, so the same on every machine and whatever
    other files exist."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count


def select_shard(jobs: Sequence[Job], index: int, count: int) -> list[Job]:
    return [job for job in jobs if shard_of(job.key, count) == index - 1]
