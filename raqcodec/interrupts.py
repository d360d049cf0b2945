"""SIGINT and SIGTERM: a clean exit at any moment, with 128 + the signal and one line on stderr.

The command line installs ``exit_on_signals`` first thing, before click, numpy or torch are imported:
a signal that arrives while torch imports (the first second or two of every run, when schedulers
cancel array jobs) must not raise KeyboardInterrupt in the middle of an extension module's
initialisation (that ended in tracebacks, "internal error" or a segfault at interpreter exit). The
handler exits at once with ``os._exit``: no interpreter shutdown, so no half-imported module is torn
down. What it must not leave behind it removes first: every temporary file ``io.atomic.atomic_path`` has
open (registered here) and child processes (``rd``'s workers).

Where unwinding is worth more than exiting at once (a batch with worker processes, which must be
stopped and swept), ``interruptible`` (used by ``raqcodec.batch.run``) swaps in a handler that raises
``Interrupted``, and puts this one back afterwards.

This module imports only modules the interpreter has loaded by then (no typing, no threading): until
its handlers are installed, an interrupt gives Python's own traceback.
"""

from __future__ import annotations

import _thread
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

HANDLED = (signal.SIGINT, signal.SIGTERM)
_live_temps: set[str] = set()  # io.atomic.atomic_path's temporary files, removed on an immediate exit
_lock = _thread.allocate_lock()


def _main_thread() -> bool:
    """Signals are the main thread's alone (elsewhere signal.signal raises)."""
    threading = sys.modules.get("threading")
    if threading is None:  # nothing has started a thread yet: this is the main thread
        return True
    return threading.current_thread() is threading.main_thread()


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised where the program is (under ``interruptible``), so that
    every ``finally`` runs on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def message(signum: int) -> str:
    """The one line an interrupted run prints."""
    if signum == signal.SIGINT:
        return "raqcodec: interrupted"
    return f"raqcodec: terminated ({signal.Signals(signum).name})"


@contextmanager
def temporary(path: os.PathLike[str] | str) -> Iterator[None]:
    """Register ``path`` as a temporary file for the duration of the block: an immediate exit removes it."""
    key = os.fspath(path)
    with _lock:
        _live_temps.add(key)
    try:
        yield
    finally:
        with _lock:
            _live_temps.discard(key)


def _exit_now(signum: int, frame: object) -> None:
    try:  # best effort: nothing here may keep the process from exiting
        for path in tuple(_live_temps):  # no lock: the interrupted thread may hold it
            try:
                os.unlink(path)
            except OSError:
                pass
        _stop_children()
        prefix = "\x1b[?25h" if os.isatty(2) else ""  # a progress bar may have hidden the cursor
        os.write(2, f"{prefix}{message(signum)}\n".encode())
    except BaseException:  # noqa: BLE001
        pass
    finally:
        os._exit(128 + signum)


def _stop_children() -> None:
    """SIGTERM the multiprocessing children (rd's pool): os._exit would leave them waiting for work."""
    process_module = sys.modules.get("multiprocessing.process")
    if process_module is None:
        return
    try:
        children = list(process_module._children)
    except Exception:  # noqa: BLE001 - best effort on the way out
        return
    for child in children:
        pid = getattr(child, "pid", None)
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass


def exit_on_signals() -> None:
    """SIGINT and SIGTERM exit at once with 128 + the signal (main thread only: signals are its own)."""
    if not _main_thread():
        return
    for signum in HANDLED:
        if signal.getsignal(signum) is signal.SIG_IGN:
            continue  # ignored by whoever started us (nohup, a worker): keep it so
        signal.signal(signum, _exit_now)


_unwinding = {"signum": 0}


def _raise_interrupted(signum: int, frame: object) -> None:
    if _unwinding["signum"]:  # already unwinding: a second signal must not cut the clean-up short
        return
    _unwinding["signum"] = signum
    raise Interrupted(signum)


def raise_on_signals(signum_ignore: tuple[int, ...] = ()) -> None:
    """SIGINT and SIGTERM raise Interrupted from now on (a worker process's whole life)."""
    _unwinding["signum"] = 0
    for signum in HANDLED:
        signal.signal(signum, signal.SIG_IGN if signum in signum_ignore else _raise_interrupted)


@contextmanager
def interruptible() -> Iterator[None]:
    """Inside the block SIGINT and SIGTERM raise Interrupted; the previous handlers come back after it.
    Main thread only: elsewhere signals are not ours."""
    if not _main_thread():
        yield
        return
    _unwinding["signum"] = 0
    previous = {s: signal.signal(s, _raise_interrupted) for s in HANDLED}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def note_interrupted(signum: int) -> None:
    """Mark a run as stopped by ``signum`` (a worker died of it): a second signal is then ignored."""
    _unwinding["signum"] = signum
