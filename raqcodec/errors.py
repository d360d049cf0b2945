"""Every exception raqcodec raises on purpose, in one torch-free module, and the one list of user errors.

Each documented error is a ``ValueError`` whose message is one sentence a user can act on:

- ``ImageError``: an input image the codec cannot use (``raqcodec.io.images``).
- ``BudgetError``: a ``bpp`` or ``codebook_size`` that is bad or out of the model's reach (rate control).
- ``FormatError``: a file that is not a valid ``.raq`` container (``raqcodec.io.bitstream``);
  ``ResidualError`` is its kind for a residual section that does not decode.
- ``EntropyError``: a corrupt, truncated or inconsistent index section; ``ContextError`` is its kind for
  the context model's sections.
- ``CodecError``: a stream the models at hand cannot decode, or a request that cannot be served here.
- ``ModelFileError``: a model file that is missing, unreadable or inconsistent (``ModelNotFound``).

``USER_ERRORS`` (these plus ``OSError``) is what the command line, batch runs and ``raqcodec rd`` report as
one line instead of an internal error; ``describe`` words any exception as the line a batch run or a
worker process reports. Importing this module imports nothing else (no numpy, no torch), so
the command line can name every error before it decides whether to load the model.
"""

from __future__ import annotations


class ImageError(ValueError):
    """An input the codec cannot use, explained in one sentence for the user."""


class BudgetError(ValueError):
    """The requested budget is outside what the model can reach for this image."""


class FormatError(ValueError):
    """A file that is not a valid ``.raq`` container; the message is one sentence."""


class ResidualError(FormatError):
    """A residual section that does not decode (corrupt symbols)."""


class EntropyError(ValueError):
    """A corrupt, truncated or inconsistent index section."""


class ContextError(EntropyError):
    """A payload the context model cannot decode (corrupt or truncated)."""


class SymbolStreamError(ValueError):
    """A corrupt or truncated refinement section."""


class CodecError(ValueError):
    """A stream cannot be decoded with the models at hand (wrong model, codebook mismatch), or a request
    cannot be served here (a bad argument, no CUDA device, an image too large for the format)."""


class ModelFileError(ValueError):
    """A model file is missing, unreadable or inconsistent."""


class ModelNotFound(ModelFileError):
    """No installed model has this name, path or fingerprint."""


class TrimError(ValueError):
    """The stream cannot be cut to what was asked (no refinement to drop, or the base stage alone is
    already over the budget)."""


class BatchError(ValueError):
    """A request that cannot be planned (collision, ``..``, nothing found): a usage error, one sentence."""


class BatchFatal(RuntimeError):
    """A failure that stops the whole run (the model cannot be loaded, workers die on start-up)."""


class WorkerStartError(RuntimeError):
    """A worker process could not start (``raqcodec.pool``): its set-up failed, or it died first."""


class RDError(ValueError):
    """A request ``rd`` cannot serve (no readable image, nothing to measure), in one sentence."""


class BaselineUnavailable(RuntimeError):
    """This Pillow build lacks the codec (for example AVIF before Pillow 11.3)."""


# Failures a user can cause and read in one line (subclasses included): the command line prints them and
# exits 1 (or 2 for option values), a batch run or ``raqcodec rd`` records them against the file.
USER_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    ImageError,
    BudgetError,
    FormatError,
    EntropyError,
    CodecError,
    ModelFileError,
)


def describe(exc: BaseException) -> str:
    """An exception as the one line a batch run or a worker reports: the message of a user error, else
    "internal error (...)" (with the traceback after it when RAQCODEC_DEBUG is set)."""
    import os
    import traceback

    if isinstance(exc, USER_ERRORS):
        return str(exc)
    text = f"internal error ({type(exc).__name__}: {exc})"
    if os.environ.get("RAQCODEC_DEBUG"):
        text += "\n" + "".join(traceback.format_exception(exc))
    return text
