"""Batch encoding and decoding behind ``raqcodec encode`` / ``raqcodec decode``: files, directory trees and
glob patterns in, one output per input (beside it, or at the mirrored path under ``-o DIR``), in worker
processes that each load the model once.

A run is: ``plan`` (find the inputs, map each to its output, refuse collisions and escapes) ->
``select_shard`` (a stable 1/N of the plan) -> ``run`` (sweep stale temporary files, sort existing outputs
into raqcodec's own and anything else, check the output folders can be written, do the rest here or in
worker processes, report each file as it finishes). docs/DESIGN.md, "Batch runs" and "Existing outputs",
states the policies: what is skipped, redone or refused, the shard hash, temporary files and symbolic links.

This module imports neither torch nor the model: a rerun that skips everything never loads them, and
worker processes import it cheaply before they load the model.
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
import traceback
import unicodedata
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_any
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..io import formats
from .. import interrupts
from ..io.bitstream import MAGIC, read_header, read_stream
from ..errors import USER_ERRORS
from ..options import DEFAULT_REFINE_STEPS, check_codebook_size
from ..io.atomic import atomic_path, check_writable, nearest_existing
from ..io.finder import walk
from ..interrupts import Interrupted, interruptible
from ..errors import BatchError, BatchFatal

ENCODE, DECODE = "encode", "decode"
SUFFIX = {ENCODE: formats.RAQ_EXTENSION, DECODE: formats.DEFAULT_OUTPUT}
DONE, SKIPPED, FAILED = "done", "skipped", "failed"
FOUND_BY_EXTENSION = {ENCODE: formats.READABLE_EXTENSIONS, DECODE: frozenset({formats.RAQ_EXTENSION})}
STDIO = "-"  # as an input: stdin; as -o: stdout
# A temporary file of a dead process is removed only once it has not been written for this long: a pid
# is only meaningful on this host, and shards on other hosts (or containers) may share the output tree.
STALE_AFTER_S = 60.0
GLOB_MAGIC = re.compile(r"[*?[]")
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")  # io.atomic.atomic_path's names
STOP_TIMEOUT_S = 10.0  # how long an interrupted worker gets to remove its temporary file


@dataclass(frozen=True)
class Job:
    source: Path
    output: Path
    key: str  # the input's path relative to its root, posix, NFC: the shard hash key
    root: Path | None  # the output directory (-o DIR) the output must stay inside; None: beside the input
    named: bool = False  # the output was named with -o FILE (so --force may replace anything there)
    stdin: bool = False  # the input is standard input (``-``)
    stdout: bool = False  # the output is standard output (``-o -``)

    @property
    def shown_source(self) -> str:
        return "<stdin>" if self.stdin else str(self.source)

    @property
    def shown_output(self) -> str:
        return "<stdout>" if self.stdout else str(self.output)


@dataclass
class Plan:
    jobs: list[Job]
    notes: list[str] = field(default_factory=list)  # symbolic links not followed, empty directories
    errors: list[str] = field(default_factory=list)  # unreadable directories: count as failures
    is_batch: bool = False  # several files, a directory or a pattern: resumable, worth a closing summary


@dataclass(frozen=True)
class Settings:
    """What every job of a run shares; sent once to each worker process."""

    kind: str
    model: str | None = None
    device: str = "auto"
    bpp: float | None = None
    codebook_size: int | None = None
    adapter: str = "seq2seq"
    refine: int | None = None  # None: the codec's default
    entropy: str = "auto"
    quality: int = formats.DEFAULT_JPEG_QUALITY  # decode to .jpg/.jpeg


@dataclass
class Outcome:
    job: Job
    status: str  # DONE, SKIPPED or FAILED
    fields: dict[str, Any] = field(default_factory=dict)  # measurements of a done job
    error: str | None = None  # why it failed, one line
    reason: str | None = None  # why it was skipped
    notes: list[str] = field(default_factory=list)
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass
class Summary:
    kind: str
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_in: int = 0  # of the files done
    bytes_out: int = 0
    bpp: list[float] = field(default_factory=list)  # of the files encoded
    seconds: float = 0.0
    interrupted: int | None = None  # the signal that stopped the run

    def add(self, outcome: Outcome) -> None:
        if outcome.status == DONE:
            self.done += 1
            self.bytes_in += outcome.bytes_in
            self.bytes_out += outcome.bytes_out
            if "bpp" in outcome.fields:
                self.bpp.append(outcome.fields["bpp"])
        elif outcome.status == SKIPPED:
            self.skipped += 1
        else:
            self.failed += 1


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
            result.jobs.append(Job(source, Path(output), STDIO, None, named=output != STDIO, stdin=True,
                                   stdout=output == STDIO))
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
        raise BatchError(f"-o {output}: several inputs (or a directory, or a pattern) need an output directory, "
                         f"and {output} is a file")
    looks_like_file = (Path(output).suffix.lower() == formats.RAQ_EXTENSION if kind == ENCODE
                       else Path(output).suffix.lower() in formats.OUTPUT_FORMATS)
    if looks_like_file:
        raise BatchError(f"-o {output}: several inputs (or a directory, or a pattern) need an output directory, "
                         f"not a file name (end it with / to make a directory of that name)")


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
                match = _TEMP_NAME.match(name)
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


# -- the work of one file (in a worker process, or in this one with -j 1) ----------------------------------

_state: dict[str, Any] = {}


def init_worker(settings: Settings, single_thread: bool) -> None:
    """Load the model once per process (option values were checked by the command line before any heavy
    import); with several processes each gets one torch thread, so N processes use N cores."""
    import torch

    from ..model import registry
    from ..codec import pick_device

    started = time.perf_counter()
    if single_thread:
        torch.set_num_threads(1)
    device = pick_device(settings.device)
    if settings.kind == ENCODE:
        model = registry.load(settings.model).on(device)
        if settings.codebook_size is not None:
            check_codebook_size(settings.codebook_size, model.size_range, model.name)
        _state["model"] = model
    elif settings.model is not None:
        registry.load(settings.model).on(device)  # cached: decode finds it by name, first
    _state["settings"] = settings
    _state["load_seconds"] = time.perf_counter() - started  # reported with the first file's stages


def describe(exc: BaseException) -> str:
    if isinstance(exc, USER_ERRORS):
        return str(exc)
    text = f"internal error ({type(exc).__name__}: {exc})"
    if os.environ.get("RAQCODEC_DEBUG"):
        text += "\n" + "".join(traceback.format_exception(exc))
    return text


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise OSError(f"{path} is not a regular file")


def write_output(job: Job, write: Callable[[Any], None]) -> None:
    """Write through ``io.atomic.atomic_path`` (a temporary name in the destination folder, synced, then
    renamed: the real name only ever holds a complete file), or to stdout for ``-o -``. Checked inside
    the output tree before and after making folders."""
    if job.stdout:
        write(sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    if job.root is not None:
        ensure_inside(job.output, job.root)
    job.output.parent.mkdir(parents=True, exist_ok=True)
    if job.root is not None:
        ensure_inside(job.output, job.root)  # a link made meanwhile
    write(job.output)


def _stages(measured: dict[str, float], write_seconds: float) -> dict[str, float]:
    stages = {"model load": _state.pop("load_seconds")} if _state.get("load_seconds") else {}
    stages.update(measured)
    stages["write"] = write_seconds
    return {name: round(seconds, 4) for name, seconds in stages.items()}


def _encode(job: Job, settings: Settings) -> tuple[dict[str, Any], list[str]]:
    from .. import codec

    if job.stdin:
        source: Any = sys.stdin.buffer.read()
    else:
        _require_file(job.source)
        source = job.source
    refine = DEFAULT_REFINE_STEPS if settings.refine is None else settings.refine
    result = codec.encode_detailed(source, bpp=settings.bpp, codebook_size=settings.codebook_size,
                                   model=_state["model"], adapter=settings.adapter, device=settings.device,
                                   entropy=settings.entropy, refine=refine)

    def write(target: Any) -> None:
        if isinstance(target, Path):
            with atomic_path(target) as tmp:
                tmp.write_bytes(result.data)
        else:
            target.write(result.data)

    started = time.perf_counter()
    write_output(job, write)
    fields = {"width": result.width, "height": result.height, "bytes": len(result.data),
              "bpp": round(result.bpp, 6), "codebook_size": result.codebook_size, "adapter": result.adapter,
              "coder": result.coder, "model": result.model, "seconds": round(result.seconds, 4)}
    if settings.bpp is not None:
        fields["budget_unused"] = result.budget_unused
    fields["stages"] = _stages(result.stages, time.perf_counter() - started)
    return fields, result.notes


def _decode(job: Job, settings: Settings) -> tuple[dict[str, Any], list[str]]:
    from .. import codec
    from ..io import writing

    started = time.perf_counter()
    data = read_stream(sys.stdin.buffer if job.stdin else job.source)
    measured: dict[str, float] = {"read": time.perf_counter() - started}
    image = codec.decode(data, model=settings.model, device=settings.device, stages=measured)
    fmt = formats.output_format(job.output) if not job.stdout else formats.OUTPUT_FORMATS[formats.DEFAULT_OUTPUT]
    notes: list[str] = []
    written = time.perf_counter()
    write_output(job, lambda target: notes.extend(writing.save_image(image, target, fmt, settings.quality)))
    return {"width": image.width, "height": image.height, "mode": image.mode, "format": fmt.name,
            "seconds": round(time.perf_counter() - started, 4),
            "stages": _stages(measured, time.perf_counter() - written)}, notes


def run_job(job: Job) -> dict[str, Any]:
    """One file; a failure is returned (one line), never raised, so that the other files go on."""
    settings: Settings = _state["settings"]
    try:
        fields, notes = (_encode if settings.kind == ENCODE else _decode)(job, settings)
        size_in = job.source.stat().st_size if not job.stdin else 0
        size_out = job.output.stat().st_size if not job.stdout else fields.get("bytes", 0)
        return {"status": DONE, "fields": fields, "notes": notes, "bytes_in": size_in, "bytes_out": size_out}
    except Exception as exc:  # noqa: BLE001 - one file's failure must not lose the others
        return {"status": FAILED, "error": describe(exc)}


# -- signals ------------------------------------------------------------------------------------------------

def _die_with_parent(parent: int) -> None:
    """SIGTERM this worker when the parent dies, even by SIGKILL: prctl on Linux, a watcher elsewhere."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) == 0:  # PR_SET_PDEATHSIG
                if os.getppid() != parent:  # it died before prctl
                    os.kill(os.getpid(), signal.SIGTERM)
                return
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, daemon=True).start()


def worker_main(conn: Any, settings: Settings, parent: int) -> None:
    """A worker process: load, say ready, then one job at a time until told to stop (None).
    SIGINT is the parent's to handle; SIGTERM unwinds the job in hand, then the process exits 128+15."""
    interrupts.raise_on_signals(signum_ignore=(signal.SIGINT,))
    try:
        _die_with_parent(parent)
        try:
            init_worker(settings, single_thread=True)
        except Exception as exc:  # noqa: BLE001 - reported by the parent as one line
            conn.send(("fatal", describe(exc)))
            return
        conn.send(("ready", None))
        while True:
            job = conn.recv()
            if job is None:
                return
            conn.send(("result", run_job(job)))
    except Interrupted as exc:
        os._exit(128 + exc.signum)  # no interpreter shutdown: torch may be half imported
    except (EOFError, OSError):  # the parent is gone
        os._exit(1)


# -- running ------------------------------------------------------------------------------------------------

def _outcome(job: Job, result: dict[str, Any]) -> Outcome:
    return Outcome(job=job, status=result["status"], fields=result.get("fields", {}), error=result.get("error"),
                   notes=result.get("notes", []), bytes_in=result.get("bytes_in", 0),
                   bytes_out=result.get("bytes_out", 0))


@dataclass
class _Worker:
    process: Any
    conn: Any
    job: Job | None = None
    ready: bool = False


class _Pool:
    """Spawned worker processes, one pipe each, one job in flight each: the parent always knows which
    file a worker holds, so a crash fails that file only and an interruption can clean up after it."""

    def __init__(self, settings: Settings) -> None:
        self.context = multiprocessing.get_context("spawn")  # forking after torch threads ran can deadlock
        self.settings = settings
        self.workers: list[_Worker] = []

    def spawn(self, size: int) -> None:
        for _ in range(size):
            self.workers.append(self._start())

    def _start(self) -> _Worker:
        here, there = self.context.Pipe()
        process = self.context.Process(target=worker_main, args=(there, self.settings, os.getpid()),
                                       daemon=True, name="raqcodec-worker")
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None  # inherited: Ctrl-C is ours
        try:
            process.start()
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
        there.close()
        return _Worker(process, here)

    def _give(self, worker: _Worker, queue: deque[Job]) -> bool:
        """Send the next job (or the stop); False when the worker is done."""
        worker.job = queue.popleft() if queue else None
        try:
            worker.conn.send(worker.job)
        except OSError:
            return worker.job is not None  # dead: its sentinel reports it
        return worker.job is not None

    def run(self, queue: deque[Job], report: Callable[[Outcome], None]) -> None:
        active = [w for w in self.workers if self._give(w, queue)]
        while active:
            handles: dict[Any, _Worker] = {}
            for w in active:
                handles[w.conn] = w
                handles[w.process.sentinel] = w
            for handle in wait_any(list(handles)):
                worker = handles[handle]
                if worker not in active:
                    continue
                message = self._receive(worker, handle)
                if message is None:
                    continue
                kind, payload = message
                if kind == "ready":
                    worker.ready = True
                    continue
                if kind == "fatal":
                    raise BatchFatal(payload)
                if kind == "result":
                    assert worker.job is not None
                    report(_outcome(worker.job, payload))
                else:  # died
                    self._died(worker, report)
                    active.remove(worker)
                    if queue:
                        replacement = self._start()
                        self.workers.append(replacement)
                        if self._give(replacement, queue):
                            active.append(replacement)
                    continue
                if not self._give(worker, queue):
                    active.remove(worker)

    @staticmethod
    def _receive(worker: _Worker, handle: Any) -> tuple[str, Any] | None:
        if handle is worker.conn or worker.conn.poll():  # its last words before its exit
            try:
                return worker.conn.recv()
            except (EOFError, OSError):
                return "died", None
        return "died", None

    def _died(self, worker: _Worker, report: Callable[[Outcome], None]) -> None:
        worker.process.join(STOP_TIMEOUT_S)
        code = worker.process.exitcode
        for signum in (signal.SIGTERM, signal.SIGINT):  # someone is stopping us: stop everything
            if code in (-signum, 128 + signum):
                interrupts.note_interrupted(signum)
                raise Interrupted(signum)
        how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        if not worker.ready:
            raise BatchFatal(f"a worker process died while starting ({how})")
        if worker.job is not None:
            _remove_temps_of(worker.process.pid, worker.job.output.parent, SUFFIX[self.settings.kind])
            report(Outcome(job=worker.job, status=FAILED, error=f"the worker process died ({how}) on this file"))
            worker.job = None

    def stop(self) -> None:
        """Interrupted: SIGTERM every worker (each removes its temporary file), wait, then sweep up."""
        for w in self.workers:
            if w.process.is_alive():
                try:
                    os.kill(w.process.pid, signal.SIGTERM)
                except OSError:
                    pass
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for w in self.workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            if w.job is not None:
                _remove_temps_of(w.process.pid, w.job.output.parent, SUFFIX[self.settings.kind])

    def close(self) -> None:
        for w in self.workers:
            w.process.join(STOP_TIMEOUT_S)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()


def _run_here(todo: list[Job], settings: Settings, report: Callable[[Outcome], None]) -> None:
    try:
        init_worker(settings, single_thread=False)
    except USER_ERRORS as exc:
        raise BatchFatal(describe(exc)) from None
    for job in todo:
        report(_outcome(job, run_job(job)))


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


def classify(jobs: Sequence[Job], kind: str, force: bool, note: Callable[[str], None], resume: bool = True
             ) -> tuple[list[Job], list[Outcome]]:
    """Jobs to do, and the outcomes decided without doing them: in a resumable run (a batch) raqcodec's
    own complete outputs are skipped unless --force; its incomplete ones are redone with a note; files
    raqcodec did not write are refused (``refusal``); outputs whose folder cannot be written fail before
    any work. Raises BatchFatal when one unwritable folder stops every output."""
    todo: list[Job] = []
    decided: list[Outcome] = []
    obstacles: dict[Path, str | None] = {}  # nearest existing folder -> why files cannot be made there
    unwritable: list[str] = []
    for job in jobs:
        if job.stdout:
            todo.append(job)
            continue
        try:
            if job.root is not None:
                ensure_inside(job.output, job.root)
            if job.output.is_dir():
                raise OSError(f"{job.output} is a directory")
        except OSError as exc:
            decided.append(Outcome(job=job, status=FAILED, error=str(exc)))
            continue
        where = nearest_existing(job.output.parent)
        if where not in obstacles:
            try:
                check_writable(job.output.parent)
                obstacles[where] = None
            except OSError as exc:
                obstacles[where] = str(exc)
        if obstacles[where] is not None:
            unwritable.append(obstacles[where] or "")
            decided.append(Outcome(job=job, status=FAILED, error=obstacles[where]))
            continue
        existing = existing_output(kind, job.output)
        refused = refusal(job, kind, force, resume, existing)
        if refused is not None:
            decided.append(Outcome(job=job, status=FAILED, error=refused))
            continue
        if existing is not None and existing.complete and resume and not force:
            decided.append(Outcome(job=job, status=SKIPPED, reason="exists and is complete; --force redoes it"))
            continue
        if existing is not None and existing.ours and existing.problem is not None:
            note(f"{job.output}: the existing output is incomplete ({existing.problem}); redoing it")
        todo.append(job)
    if len(jobs) > 1 and len(unwritable) == len(jobs) and len(set(unwritable)) == 1:
        raise BatchFatal(unwritable[0])  # one line, not one per file
    return todo, decided


def run(jobs: Sequence[Job], settings: Settings, *, force: bool = False, workers: int = 1, resume: bool = True,
        report: Callable[[Outcome], None] = lambda o: None, note: Callable[[str], None] = lambda s: None,
        start: Callable[[int], None] = lambda n: None) -> Summary:
    """Do ``jobs``: ``report`` gets every outcome (skipped ones first), ``start`` the number of files to
    do. ``resume``: skip raqcodec's complete outputs (batch runs; a single named file is redone). Returns
    the summary, with ``interrupted`` set when SIGINT/SIGTERM stopped worker processes (every output
    written is complete; no temporary file is left). Raises BatchFatal when nothing can be done.

    Working here (-j 1), a signal is ``raqcodec.interrupts``' business: the command line exits at once,
    removing the temporary file in hand. Worker processes must be stopped and swept, so while they run
    SIGINT and SIGTERM unwind this process instead (``interrupts.interruptible``)."""
    started = time.perf_counter()
    summary = Summary(kind=settings.kind, total=len(jobs))

    def tally(outcome: Outcome) -> None:
        summary.add(outcome)
        report(outcome)

    suffixes = {SUFFIX[settings.kind]} | {job.output.suffix for job in jobs if job.output.suffix}
    removed = [path for suffix in sorted(suffixes) for path in sweep_stale_temps(jobs, suffix)]
    if removed:
        note(f"removed {len(removed)} temporary file(s) left by a killed run (e.g. {removed[0]})")
    todo, decided = classify(jobs, settings.kind, force, note, resume)
    for outcome in decided:
        tally(outcome)
    start(len(todo))
    if todo and workers > 1 and len(todo) > 1:
        with interruptible():
            try:
                pool = _Pool(settings)
                try:
                    pool.spawn(min(workers, len(todo)))
                    pool.run(deque(todo), tally)
                except BaseException:
                    pool.stop()
                    raise
                finally:
                    pool.close()
            except Interrupted as exc:
                summary.interrupted = exc.signum
    elif todo:
        _run_here(todo, settings, tally)
    summary.seconds = time.perf_counter() - started
    return summary


def summary_line(summary: Summary) -> str:
    """One line for stderr: counts, bytes, mean bpp (encode), time and throughput."""
    rate = summary.done / summary.seconds if summary.seconds > 0 else 0.0
    parts = [f"{summary.done} done, {summary.skipped} skipped, {summary.failed} failed of {summary.total} files",
             f"{_size(summary.bytes_in)} in, {_size(summary.bytes_out)} out"]
    if summary.bpp:
        parts.append(f"mean {sum(summary.bpp) / len(summary.bpp):.4f} bpp")
    parts.append(f"{summary.seconds:.1f} s ({rate:.1f} files/s)")
    head = f"{summary.kind} interrupted ({signal.Signals(summary.interrupted).name})" if summary.interrupted \
        else summary.kind
    return f"{head}: " + "; ".join(parts)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
