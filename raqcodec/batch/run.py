"""A whole batch run: sweep, sort existing outputs, do the rest here or on the pool, report, summarise."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import BatchFatal, WorkerStartError
from ..interrupts import Interrupted, interruptible
from ..io.atomic import check_writable, nearest_existing
from ..pool import Call, WorkerPool
from .jobs import FAILED, SKIPPED, SUFFIX, Job, Outcome, Settings, Summary
from .outputs import _remove_temps_of, ensure_inside, existing_output, refusal, sweep_stale_temps
from .work import init_worker, run_job


def _outcome(job: Job, result: dict[str, Any]) -> Outcome:
    return Outcome(
        job=job,
        status=result["status"],
        fields=result.get("fields", {}),
        error=result.get("error"),
        notes=result.get("notes", []),
        bytes_in=result.get("bytes_in", 0),
        bytes_out=result.get("bytes_out", 0),
    )


def _do(
    todo: list[Job],
    settings: Settings,
    workers: int,
    report: Callable[[Outcome], None],
    stage: Callable[[Job, str], None] | None = None,
) -> None:
    """The jobs on ``raqcodec.pool`` (``workers`` 1: here). A worker that dies fails its one file, and
    what it left in that file's folder is removed. ``stage(job, name)``: each stage of an encode as it
    starts, forwarded from the workers."""
    suffix = SUFFIX[settings.kind]

    def cleanup(call: Call, pid: int) -> None:
        job: Job = call[1][0]
        _remove_temps_of(pid, job.output.parent, suffix)

    def done(index: int, result: dict[str, Any]) -> None:
        report(_outcome(todo[index], result))

    def died(index: int, how: str) -> None:
        report(Outcome(job=todo[index], status=FAILED, error=f"the worker process died ({how}) on this file"))

    try:
        with WorkerPool(workers, init_worker, (settings,), cleanup=cleanup) as pool:
            event = None if stage is None else lambda index, name: stage(todo[index], name)
            pool.run([(run_job, (job,)) for job in todo], done, died, event)
    except WorkerStartError as exc:
        raise BatchFatal(str(exc)) from None


def classify(
    jobs: Sequence[Job], kind: str, force: bool, note: Callable[[str], None], resume: bool = True
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


def run(
    jobs: Sequence[Job],
    settings: Settings,
    *,
    force: bool = False,
    workers: int = 1,
    resume: bool = True,
    report: Callable[[Outcome], None] = lambda o: None,
    note: Callable[[str], None] = lambda s: None,
    start: Callable[[int], None] = lambda n: None,
    stage: Callable[[Job, str], None] | None = None,
) -> Summary:
    """Do ``jobs``: ``report`` gets every outcome (skipped ones first), ``start`` the number of files to
    do, ``stage(job, name)`` each stage of an encode as it starts (``codec.encode_detailed``'s
    ``progress``, from worker processes too), before the job's outcome. ``resume``: skip raqcodec's
    complete outputs (batch runs; a single named file is redone). Returns the summary, with
    ``interrupted`` set when SIGINT/SIGTERM stopped worker processes (every output written is complete;
    no temporary file is left). Raises BatchFatal when nothing can be done.

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
    size = min(workers, len(todo))
    if size > 1:
        with interruptible():
            try:
                _do(todo, settings, size, tally, stage)
            except Interrupted as exc:
                summary.interrupted = exc.signum
    elif todo:
        _do(todo, settings, 1, tally, stage)
    summary.seconds = time.perf_counter() - started
    return summary


def summary_line(summary: Summary) -> str:
    """One line for stderr: counts, bytes, mean bpp (encode), time and throughput."""
    rate = summary.done / summary.seconds if summary.seconds > 0 else 0.0
    parts = [
        f"{summary.done} done, {summary.skipped} skipped, {summary.failed} failed of {summary.total} files",
        f"{_size(summary.bytes_in)} in, {_size(summary.bytes_out)} out",
    ]
    if summary.bpp:
        parts.append(f"mean {sum(summary.bpp) / len(summary.bpp):.4f} bpp")
    parts.append(f"{summary.seconds:.1f} s ({rate:.1f} files/s)")
    head = (
        f"{summary.kind} interrupted ({signal.Signals(summary.interrupted).name})"
        if summary.interrupted
        else summary.kind
    )
    return f"{head}: " + "; ".join(parts)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
