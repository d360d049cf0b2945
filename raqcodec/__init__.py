"""raqcodec: a VQ-VAE image codec where one model serves any bitrate (Rate-Adaptive Quantization + rANS).

    >>> import raqcodec
    >>> data = raqcodec.encode("photo.png", bpp=0.3)          # bytes of a .raq file, at most 0.3 bpp
    >>> image = raqcodec.decode(data)                          # PIL.Image (also from a path or file object)
    >>> tokens = raqcodec.inspect(data)["indices"]             # the h x w VQ index grid

Every name is imported on first use, so ``import raqcodec`` costs nothing: ``python -m raqcodec``
installs its signal handling before anything else is imported, and ``raqcodec info`` never loads torch.
Errors are ``ImageError``, ``BudgetError``, ``FormatError``, ``EntropyError``, ``CodecError`` and
``ModelFileError``, all ``ValueError``s.
"""

from __future__ import annotations

# No imports here, not even typing: `python -m raqcodec` imports this package before its entry point can
# install the signal handlers, and every millisecond spent here is one where Ctrl-C gives a traceback.
_LAZY: dict[str, str | tuple[str, str]] = {
    "encode": "codec",
    "decode": "codec",
    "inspect": "codec",
    "encode_detailed": "codec",
    "header_summary": ("io.bitstream", "describe"),
    "EncodeResult": "codec",
    "load_model": ("model.registry", "load"),
    "available_models": "model.registry",
    "DEFAULT_MODEL": "model.registry",
    "FormatError": "errors",
    "EntropyError": "errors",
    "ImageError": "errors",
    "BudgetError": "errors",
    "CodecError": "errors",
    "ModelFileError": "errors",
}

__all__ = ["__version__", *_LAZY]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("raqcodec")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0+unknown"


def __getattr__(name: str) -> object:
    if name == "__version__":
        value: object = _version()
    elif name in _LAZY:
        import importlib

        target = _LAZY[name]
        module_name, attr = target if isinstance(target, tuple) else (target, name)
        value = getattr(importlib.import_module(f".{module_name}", __name__), attr)
    else:
        raise AttributeError(f"module 'raqcodec' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
