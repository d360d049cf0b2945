"""The error classes of the API that need no heavy import, and the set of all documented ones.

Every documented error is a ``ValueError`` with a one-sentence message: ``ImageError`` (imageio),
``BudgetError`` (ratecontrol), ``FormatError`` (bitstream), ``EntropyError`` (entropy), ``CodecError``
and ``ModelFileError`` (here, so that the command line can name them without importing torch).
"""

from __future__ import annotations

import sys

# module -> class name of the documented errors (each module defines its own)
DOCUMENTED = {"raqcodec.imageio": "ImageError", "raqcodec.ratecontrol": "BudgetError",
              "raqcodec.bitstream": "FormatError", "raqcodec.entropy": "EntropyError",
              "raqcodec.errors": ("CodecError", "ModelFileError")}


class CodecError(ValueError):
    """A stream cannot be decoded with the models at hand (wrong model, codebook mismatch), or a request
    cannot be served here (a bad argument, no CUDA device, an image too large for the format)."""


class ModelFileError(ValueError):
    """A model file is missing, unreadable or inconsistent."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The documented error classes, plus OSError: failures a user can cause and read in one line.

    Only from modules already imported: an error of a module that was never imported cannot have been
    raised, and importing one just to name its class would pull numpy, constriction or torch into a
    process that did not need them."""
    found: list[type[BaseException]] = [OSError]
    for module_name, names in DOCUMENTED.items():
        module = sys.modules.get(module_name)
        if module is None:
            continue
        for name in (names,) if isinstance(names, str) else names:
            found.append(getattr(module, name))
    return tuple(found)
