"""raqcodec: a VQ-VAE image codec where one model serves any bitrate (Rate-Adaptive Quantization + rANS).

    >>> import raqcodec
    >>> data = raqcodec.encode("photo.png", bpp=0.3)          # bytes of a .raq file, at most 0.3 bpp
    >>> image = raqcodec.decode(data)                          # PIL.Image
    >>> tokens = raqcodec.inspect(data)["indices"]             # the h x w VQ index grid
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .bitstream import FormatError
from .codec import CodecError, EncodeResult, decode, encode, encode_detailed, header_summary, inspect
from .entropy import EntropyError
from .imageio import ImageError
from .modelfile import ModelFileError
from .ratecontrol import BudgetError
from .registry import DEFAULT_MODEL, available_models
from .registry import load as load_model

try:
    __version__ = version("raqcodec")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "encode", "decode", "inspect", "encode_detailed", "header_summary", "load_model", "available_models",
    "DEFAULT_MODEL", "EncodeResult", "FormatError", "EntropyError", "ImageError", "ModelFileError",
    "BudgetError", "CodecError", "__version__",
]
