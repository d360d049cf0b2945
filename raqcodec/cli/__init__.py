"""The ``raqcodec`` command line: a thin layer over the library (``raqcodec.codec``, ``raqcodec.batch``,
``raqcodec.eval``, ``raqcodec.train``).

Errors a user can cause (bad input, unreachable budget, missing model) print one line on stderr and exit
non-zero; set RAQCODEC_DEBUG=1 to see tracebacks of unexpected errors. Option values are checked before
anything heavy is imported: ``--help``, ``--version``, ``info``, ``models`` and every usage error answer
without loading torch. Signals are handled from the first line of the entry point
(``raqcodec.__main__``, ``raqcodec.interrupts``).

Modules: ``app`` (the command group: one-line errors, exit codes), ``options`` (option values checked
before any heavy import, and the options several commands share), ``coding`` (encode, decode), ``inspection``
(info, trim, models), ``evaluation`` (compare, rd, plot), ``training`` (train, export, train-context).
"""

from . import coding, evaluation, inspection, training  # noqa: F401 - importing them registers their commands
from .app import main

__all__ = ["main"]
