"""The one pool of worker processes: batch encode/decode (``raqcodec.batch``) and ``raqcodec rd``.

Both need the same things of it, so they share one implementation with one set of rules:

- Workers are *spawned* (forking a process whose torch/OpenMP threads have run can deadlock), run an
  initializer once (the model is loaded once per worker) and use one torch thread each, so that N workers
  use N cores rather than N x cores threads fighting for them.
- Each worker has its own pipe and at most one task in flight: the parent always knows which task a worker
  holds, so a worker that dies (out of memory, say) fails that task only; a new worker takes the rest.
- Results go to a callback as they come (``run``: a batch reports each file when it is done) or into a
  list in the order of the calls (``map``: ``rd``'s rows).
- Workers die with the parent, even when it is killed by SIGKILL (``PR_SET_PDEATHSIG`` on Linux, a watcher
  thread elsewhere). They ignore SIGINT (Ctrl-C reaches the whole process group: stopping them is the
  parent's job) and unwind on SIGTERM, removing the temporary file in hand. A worker killed by SIGTERM or
  SIGINT means someone is stopping the run: the parent raises ``interrupts.Interrupted``. On any exception
  (an interruption included) leaving the ``with`` block, every worker is sent SIGTERM, waited for, killed
  if it does not go, and ``cleanup`` sweeps what a killed one may have left.
- One worker is no pool: ``size`` 1 runs the initializer and every task in this process (with this
  process's threads), with the same callbacks.
- A task may say how it is getting on with ``emit(payload)`` (an encode: each stage as it starts): the
  payload reaches ``run``'s optional ``event(index, payload)`` in the parent, over the worker's pipe ahead
  of the task's result (or directly, in this process). Nobody listening, it is dropped.

A task is a module-level function and its arguments (both pickled to the worker). Tasks report their own
failures in their results (a batch's failed file, an rd row with an error); an exception a task lets out
is raised here, as if the task had run here.
"""

from __future__ import annotations

import ctypes
import functools
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_any
from types import TracebackType
from typing import Any, TypeVar

from . import interrupts
from .errors import USER_ERRORS, WorkerStartError, describe
from .interrupts import Interrupted

Call = tuple[Callable[..., Any], tuple[Any, ...]]  # a task: a module-level function and its arguments
T = TypeVar("T")
STOP_TIMEOUT_S = 10.0  # how long a stopped worker gets to unwind (and remove its temporary file)

# -- in the worker process ---------------------------------------------------------------------------------

_emitter: list[Callable[[Any], None]] = []  # where emit() sends: the pipe in a worker, run()'s event here


def emit(payload: Any) -> None:
    """Tell whoever runs the task in hand (``WorkerPool.run``'s ``event``) something small and picklable
    about it; nothing happens when no pool runs it or nobody listens. Never raises for a lost pipe (the
    worker is going anyway)."""
    if _emitter:
        _emitter[-1](payload)


def _send_event(conn: Any) -> Callable[[Any], None]:
    def send(payload: Any) -> None:
        try:
            conn.send(("event", payload))
        except (OSError, EOFError):
            pass

    return send


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


def _worker_main(
    conn: Any, init: Callable[..., None], init_args: tuple[Any, ...], torch_threads: int | None, parent: int
) -> None:
    """A worker process: set up, say ready, then one task at a time until told to stop (None).
    SIGINT is the parent's to handle; SIGTERM unwinds the task in hand, then the process exits 128+15."""
    interrupts.raise_on_signals(signum_ignore=(signal.SIGINT,))
    try:
        _die_with_parent(parent)
        try:
            if torch_threads is not None:
                import torch

                torch.set_num_threads(torch_threads)
            init(*init_args)
        except Exception as exc:  # noqa: BLE001 - reported by the parent as one line
            conn.send(("fatal", describe(exc)))
            return
        conn.send(("ready", None))
        _emitter.append(_send_event(conn))
        while True:
            call = conn.recv()
            if call is None:
                return
            fn, args = call
            try:
                value = fn(*args)
            except Exception as exc:  # noqa: BLE001 - raised again in the parent
                try:
                    conn.send(("raised", exc))
                except Exception:  # noqa: BLE001 - an exception that does not pickle
                    conn.send(("raised", RuntimeError(describe(exc))))
                continue
            conn.send(("result", value))
    except Interrupted as exc:
        os._exit(128 + exc.signum)  # no interpreter shutdown: torch may be half imported
    except (EOFError, OSError):  # the parent is gone
        os._exit(1)


# -- in the parent -----------------------------------------------------------------------------------------


def _drop(payload: Any) -> None:
    """An event nobody listens to."""


@dataclass
class _Worker:
    process: Any
    conn: Any
    task: tuple[int, Call] | None = None  # the index (in the calls of this run) and the call it holds
    ready: bool = False
    stopping: bool = False  # sent the stop


class WorkerPool:
    """``size`` spawned worker processes that each ran ``init(*init_args)`` once (``size`` 1: this process).

    Use it as a context manager: entering starts the workers (or runs ``init`` here), leaving stops them;
    an exception leaving the block terminates them first. ``cleanup(call, pid)`` is called for each task a
    worker held when it died or had to be stopped: remove what it may have left (temporary files).

    Raises ``WorkerStartError`` when a worker's ``init`` fails or a worker dies before it is ready (``init``
    failing with one of ``USER_ERRORS`` here, too: anything else raised here is not caught)."""

    def __init__(
        self,
        size: int,
        init: Callable[..., None],
        init_args: tuple[Any, ...] = (),
        *,
        cleanup: Callable[[Call, int], None] | None = None,
        torch_threads: int | None = 1,
    ) -> None:
        self.size = max(1, size)
        self.init, self.init_args = init, init_args
        self.cleanup = cleanup
        self.torch_threads = torch_threads  # per worker; None leaves torch's default
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[_Worker] = []

    @property
    def inline(self) -> bool:
        return self.size == 1

    def __enter__(self) -> WorkerPool:
        if self.inline:
            try:
                self.init(*self.init_args)
            except USER_ERRORS as exc:
                raise WorkerStartError(describe(exc)) from None
        else:
            try:
                for _ in range(self.size):
                    self.workers.append(self._start())
            except BaseException:
                self.stop()
                self.close()
                raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc is not None:
            self.stop()
        self.close()

    # -- running tasks -------------------------------------------------------------------------------------

    def map(
        self,
        fn: Callable[..., T],
        arg_lists: Sequence[tuple[Any, ...]],
        tick: Callable[[], None],
        lost: Callable[[str], T],
    ) -> list[T]:
        """``fn`` over each argument tuple, the results in the same order; ``tick`` after each task done.
        A task whose worker died gets ``lost(how)`` as its result ("signal SIGKILL", "exit code 1")."""
        results: list[Any] = [None] * len(arg_lists)

        def done(index: int, value: Any) -> None:
            results[index] = value
            tick()

        def died(index: int, how: str) -> None:
            results[index] = lost(how)
            tick()

        self.run([(fn, args) for args in arg_lists], done, died)
        return results

    def run(
        self,
        calls: Sequence[Call],
        done: Callable[[int, Any], None],
        died: Callable[[int, str], None],
        event: Callable[[int, Any], None] | None = None,
    ) -> None:
        """Run every call; ``done(index, result)`` as each one finishes (in any order with workers), or
        ``died(index, how)`` when the worker holding it died; ``event(index, payload)`` for each ``emit``
        of a call, before its ``done``. Returns when every call is accounted for."""
        if self.inline:
            for index, (fn, args) in enumerate(calls):
                _emitter.append(functools.partial(event, index) if event is not None else _drop)
                try:
                    value = fn(*args)
                finally:
                    _emitter.pop()
                done(index, value)
            return
        queue = deque(enumerate(calls))
        for worker in list(self.workers):  # one that died while idle is replaced before it is given work
            if not worker.process.is_alive():
                self._died(worker, died)
        while queue and len(self.workers) < self.size:
            self.workers.append(self._start())
        busy = [w for w in self.workers if self._give(w, queue)]
        while busy:
            handles: dict[Any, _Worker] = {}
            for w in busy:
                handles[w.conn] = w
                handles[w.process.sentinel] = w
            for handle in wait_any(list(handles)):
                worker = handles[handle]
                if worker not in busy:  # both of its handles were ready, and the first settled it
                    continue
                kind, payload = self._receive(worker, handle)
                if kind == "ready":
                    worker.ready = True
                    continue
                if kind == "fatal":
                    raise WorkerStartError(payload)
                if kind == "event":
                    if event is not None and worker.task is not None:
                        event(worker.task[0], payload)
                    continue
                if kind == "died":
                    busy.remove(worker)
                    self._died(worker, died)
                    if queue:
                        replacement = self._start()
                        self.workers.append(replacement)
                        if self._give(replacement, queue):
                            busy.append(replacement)
                    continue
                assert worker.task is not None
                index = worker.task[0]
                worker.task = None
                if kind == "raised":
                    raise payload
                done(index, payload)
                if not self._give(worker, queue):
                    busy.remove(worker)

    def _start(self) -> _Worker:
        here, there = self.context.Pipe()
        process = self.context.Process(
            target=_worker_main,
            args=(there, self.init, self.init_args, self.torch_threads, os.getpid()),
            daemon=True,
            name="raqcodec-worker",
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

    @staticmethod
    def _give(worker: _Worker, queue: deque[tuple[int, Call]]) -> bool:
        """Send the next call; False (and nothing sent) when there is none."""
        if not queue:
            return False
        worker.task = queue.popleft()
        try:
            worker.conn.send(worker.task[1])
        except OSError:
            pass  # dead: its sentinel reports it, and the task is failed with it
        return True

    @staticmethod
    def _receive(worker: _Worker, handle: Any) -> tuple[str, Any]:
        if handle is worker.conn or worker.conn.poll():  # its last words before its exit
            try:
                message: tuple[str, Any] = worker.conn.recv()
                return message
            except (EOFError, OSError):
                return "died", None
        return "died", None

    def _died(self, worker: _Worker, died: Callable[[int, str], None]) -> None:
        """A worker is gone: someone stopping the run, a failed start, or the failure of its task."""
        self.workers.remove(worker)
        worker.process.join(STOP_TIMEOUT_S)
        try:
            while worker.conn.poll():  # what it said before it went: ready, or why it could not start
                kind, payload = worker.conn.recv()
                if kind == "fatal":
                    raise WorkerStartError(payload)
                worker.ready = worker.ready or kind == "ready"
        except (EOFError, OSError):
            pass
        finally:
            worker.conn.close()
        code = worker.process.exitcode
        index = worker.task[0] if worker.task is not None else None
        self._sweep(worker)
        for signum in (signal.SIGTERM, signal.SIGINT):  # someone is stopping us: stop everything
            if code in (-signum, 128 + signum):
                interrupts.note_interrupted(signum)
                raise Interrupted(signum)
        how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        if not worker.ready:
            raise WorkerStartError(f"a worker process died while starting ({how})")
        if index is not None:
            died(index, how)

    def _sweep(self, worker: _Worker) -> None:
        if worker.task is not None:
            if self.cleanup is not None:
                self.cleanup(worker.task[1], worker.process.pid)
            worker.task = None

    # -- stopping ------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Interrupted or failed: SIGTERM every worker (each unwinds the task in hand), wait, kill the ones
        that do not go, and sweep up after the tasks they held."""
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
            self._sweep(w)

    def close(self) -> None:
        """Tell every worker to stop, wait for it (killing one that does not go) and release its pipe."""
        for w in self.workers:
            if not w.stopping:
                w.stopping = True
                try:
                    w.conn.send(None)
                except OSError:
                    pass
        for w in self.workers:
            w.process.join(STOP_TIMEOUT_S)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()
        self.workers = []
