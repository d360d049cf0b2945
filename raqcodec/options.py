"""What an encode or a decode may be asked for, and the one check of each request: torch-free, so that the
library, the batch workers and the command line offer the same choices and refuse the same values (the
command line only words its refusals as usage errors).
"""

from __future__ import annotations

import math
import numbers

from .errors import BudgetError, CodecError
from .io.bitstream import ADAPTERS

__all__ = [
    "ADAPTERS",
    "DEFAULT_EFFORT",
    "DEFAULT_REFINE_STEPS",
    "DEVICES",
    "DEVICE_TYPES",
    "ENTROPY_CHOICES",
    "MAX_EFFORT",
    "MAX_REFINE_STEPS",
    "check_codebook_size",
    "check_encode_arguments",
    "is_positive_bpp",
    "is_positive_number",
    "size_in_range",
]

# Encoder-side index refinement (raqcodec.model.refine): steps by default and the most allowed. Images over
# the tile budget (raqcodec.model.tiling) are refined tile by tile, like every other network evaluation.
DEFAULT_REFINE_STEPS = 2
MAX_REFINE_STEPS = 50
# Encoder effort (``--effort``): levels 0..MAX_EFFORT, each searching more than the one below
# (raqcodec.ratecontrol.search.EFFORTS says what each does; docs/DESIGN.md "Effort levels" what each costs).
MAX_EFFORT = 3
# 2: within 0.12 dB of level 3 on Kodak at 0.1-0.3 bpp in a third of its time (docs/DESIGN.md "Effort levels")
DEFAULT_EFFORT = 2
# Residual layers of a format 3 stream (the budgets it can be trimmed to, and its own).
MAX_LAYERS = 4
ENTROPY_CHOICES = ("auto", "context", "order0")  # index coders; auto: context when the model has one
DEVICE_TYPES = ("cpu", "cuda")  # torch device types the networks may run on ("cuda:N" included)
DEVICES = ("auto", *DEVICE_TYPES)  # what the command line offers; auto: CUDA when present


def is_positive_bpp(value: object) -> bool:
    """A budget in bits per pixel: a finite real number above 0 (not a bool)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value) and float(value) > 0


def size_in_range(size: int, size_range: tuple[int, int]) -> bool:
    """Whether a codebook size K~ is one a model with ``size_range`` codes with."""
    return size_range[0] <= size <= size_range[1]


def check_codebook_size(size: int, size_range: tuple[int, int], model_name: str) -> None:
    """BudgetError unless ``size`` is in the model's range."""
    if not size_in_range(size, size_range):
        lo, hi = size_range
        raise BudgetError(f"codebook size {size} is outside model {model_name}'s range {lo}..{hi}")


def is_positive_number(value: object) -> bool:
    """A finite real number above 0 (not a bool): a budget in bpp, a PSNR target in dB."""
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value) and float(value) > 0


def check_encode_arguments(
    bpp: object,
    codebook_size: object,
    adapter: object,
    refine: object,
    entropy: object,
    effort: object = None,
    psnr: object = None,
    layers: object = None,
) -> None:
    """Every encode argument that needs no model checked before any work, each failure one of the
    documented errors (the tile budget is ``raqcodec.model.tiling.tile_pixels``'s to check)."""
    if sum(x is not None for x in (bpp, codebook_size, psnr)) != 1:
        raise BudgetError("give exactly one of bpp, codebook_size and psnr")
    if codebook_size is not None and (
        isinstance(codebook_size, bool) or not isinstance(codebook_size, numbers.Integral)
    ):
        raise BudgetError(f"codebook_size must be an integer, got {codebook_size!r}")
    if bpp is not None and not is_positive_bpp(bpp):
        raise BudgetError(f"bpp must be a positive number, got {bpp!r}")
    if psnr is not None and not is_positive_number(psnr):
        raise BudgetError(f"psnr must be a positive number of dB, got {psnr!r}")
    if adapter not in ADAPTERS:
        raise CodecError(f"adapter must be one of {', '.join(ADAPTERS)}, got {adapter!r}")
    if entropy not in ENTROPY_CHOICES:
        raise CodecError(f"entropy must be one of {', '.join(ENTROPY_CHOICES)}, got {entropy!r}")
    if refine is not None and (
        isinstance(refine, bool) or not isinstance(refine, int) or not 0 <= refine <= MAX_REFINE_STEPS
    ):
        raise CodecError(f"refine must be an integer in 0..{MAX_REFINE_STEPS}, got {refine!r}")
    if effort is not None and (
        isinstance(effort, bool) or not isinstance(effort, int) or not 0 <= effort <= MAX_EFFORT
    ):
        raise CodecError(f"effort must be an integer in 0..{MAX_EFFORT}, got {effort!r}")
    if layers:
        if bpp is None:
            raise BudgetError("layers need a bpp budget: they are smaller budgets the file can be trimmed to")
        budgets = list(layers) if isinstance(layers, (list, tuple)) else []
        if (
            not budgets
            or not all(is_positive_bpp(x) for x in budgets)
            or budgets != sorted(set(budgets))
            or len(budgets) > MAX_LAYERS - 1
            or float(budgets[-1]) >= float(bpp)  # type: ignore[arg-type]
        ):
            raise BudgetError(
                f"layers must be up to {MAX_LAYERS - 1} ascending budgets below bpp {bpp}, got {layers!r}"
            )
