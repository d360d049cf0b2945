"""raqcodec: a VQ-VAE image codec where one model serves any bitrate (Rate-Adaptive Quantization + rANS).

    >>> import raqcodec
    >>> data = raqcodec.encode("photo.png", bpp=0.3)          # bytes of a .raq file, at most 0.3 bpp
    >>> image = raqcodec.decode(data)                          # PIL.Image
    >>> tokens = raqcodec.inspect(data)["indices"]             # the h x w VQ index grid

The names that need torch are imported on first use, so ``import raqcodec`` (and ``raqcodec info``)
stays fast.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .bitstream import FormatError
from .entropy import EntropyError
from .imageio import ImageError
from .ratecontrol import BudgetError

try:
    __version__ = version("raqcodec")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

_LAZY = {
    "encode": "codec", "decode": "codec", "inspect": "codec", "encode_detailed": "codec",
    "header_summary": ("bitstream", "describe"), "EncodeResult": "codec", "CodecError": "codec",
    "load_model": ("registry", "load"), "available_models": "registry", "DEFAULT_MODEL": "registry",
    "ModelFileError": "modelfile",
}

__all__ = ["FormatError", "EntropyError", "ImageError", "BudgetError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'raqcodec' has no attribute {name!r}")
    target = _LAZY[name]
    module_name, attr = target if isinstance(target, tuple) else (target, name)
    value = getattr(importlib.import_module(f".{module_name}", __name__), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
