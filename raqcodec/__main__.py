"""``python -m raqcodec`` and the ``raqcodec`` console script.

Signal handling comes first, before click, numpy or torch are imported (``raqcodec.interrupts``): an
interrupt at any moment of start-up exits cleanly with 128 + the signal.

The process ends without the interpreter's teardown (``exit_without_teardown``): once torch is imported,
finalizing its modules takes 0.4-0.5 s of every run on a 2-core machine, longer than some encodes.
"""

from __future__ import annotations

import atexit
import os
import sys

from .interrupts import exit_on_signals


def exit_status(code: object) -> int:
    """The process status a ``SystemExit(code)`` stands for, as the interpreter would exit with it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def exit_without_teardown(status: int) -> None:
    """Flush the streams, run the atexit handlers (multiprocessing's, logging's, weakref finalizers), then
    ``os._exit``: what the interpreter's shutdown adds after that is freeing modules and objects, which
    a process that is ending does not need. Every output is written and renamed by then: commands return
    only when their work is done (pools are closed in ``with`` blocks)."""
    from .cli.app import EXIT_PIPE  # imported by now: not before the signal handlers

    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        status = status or EXIT_PIPE
    try:
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass
    atexit._run_exitfuncs()
    os._exit(status)


def run() -> None:
    exit_on_signals()
    from .cli import main

    try:
        main()
        status = 0
    except SystemExit as exc:
        status = exit_status(exc.code)
    exit_without_teardown(status)


if __name__ == "__main__":
    run()
