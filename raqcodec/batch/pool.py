"""Worker processes for ``-j N``: spawned, one pipe and one job in flight each, stopped and swept when
interrupted."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_any
from typing import Any

from .. import interrupts
from ..errors import BatchFatal
from ..interrupts import Interrupted
from .jobs import FAILED, STOP_TIMEOUT_S, SUFFIX, Job, Outcome, Settings
from .outputs import _remove_temps_of
from .work import describe, init_worker, run_job

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
    return Outcome(
        job=job,
        status=result["status"],
        fields=result.get("fields", {}),
        error=result.get("error"),
        notes=result.get("notes", []),
        bytes_in=result.get("bytes_in", 0),
        bytes_out=result.get("bytes_out", 0),
    )


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
        process = self.context.Process(
            target=worker_main, args=(there, self.settings, os.getpid()), daemon=True, name="raqcodec-worker"
        )
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
