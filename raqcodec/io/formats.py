"""File formats by name: which image files raqcodec reads, which it writes, and how it marks what it writes.

One list of readable image extensions serves every place that finds images by name (directory and
pattern inputs of ``encode``, ``rd``); a file named on the command line is tried whatever its name.
Decoded images are written in the format their extension names (``OUTPUT_FORMATS``).

Every file raqcodec writes says so, so that a later run can tell its own outputs (which it may redo
or skip) from anything else (which it replaces only when asked to with ``--force``): a ``.raq`` starts
with the magic ``\\x89RAQ``; a decoded image carries ``Software: raqcodec <version>`` (a PNG tEXt
chunk, the EXIF/TIFF Software tag of JPEG, WebP and TIFF files, a ``# raqcodec`` comment line in the
header of PPM/PGM files).

Standard library only: the command line reads these tables before any heavy import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# Image files a directory or pattern search finds (Pillow reads all of them; tests/test_formats.py checks).
READABLE_EXTENSIONS = frozenset(
    {
        ".png",
        ".apng",
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".webp",
        ".avif",
        ".gif",
        ".bmp",
        ".tif",
        ".tiff",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
    }
)
RAQ_EXTENSION = ".raq"
MARKER = "raqcodec"  # the Software value starts with it; the version follows
EXIF_SOFTWARE = 0x0131  # the EXIF/TIFF Software tag


@dataclass(frozen=True)
class OutputFormat:
    """A format ``decode`` writes."""

    name: str  # Pillow's format name, or "PNM" (written by raqcodec itself, with its marker comment)
    lossless: bool
    alpha: bool  # can hold an alpha channel
    gray: bool  # can hold grayscale as such (else gray is written as RGB, which loses nothing)
    sixteen_bit: bool  # can hold 16-bit gray
    description: str


OUTPUT_FORMATS: dict[str, OutputFormat] = {
    ".png": OutputFormat("PNG", True, True, True, True, "PNG"),
    ".tif": OutputFormat("TIFF", True, True, True, True, "TIFF (deflate)"),
    ".tiff": OutputFormat("TIFF", True, True, True, True, "TIFF (deflate)"),
    ".webp": OutputFormat("WEBP", True, True, False, False, "lossless WebP"),
    ".jpg": OutputFormat("JPEG", False, False, True, False, "JPEG"),
    ".jpeg": OutputFormat("JPEG", False, False, True, False, "JPEG"),
    ".ppm": OutputFormat("PNM", True, False, False, True, "binary PPM (P6)"),
    ".pgm": OutputFormat("PNM", True, False, True, True, "binary PGM (P5, gray images only)"),
}
DEFAULT_OUTPUT = ".png"
DEFAULT_JPEG_QUALITY = 95


def output_extensions() -> str:
    """The extensions ``decode -o`` accepts, for messages and help."""
    return ", ".join(OUTPUT_FORMATS)


def output_format(path: os.PathLike[str] | str) -> OutputFormat:
    """The format a decoded image is written in at ``path``, by extension; ValueError for any other."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in OUTPUT_FORMATS:
        shown = f"'{suffix}'" if suffix else "no extension"
        raise ValueError(
            f"cannot tell which image format to write for {os.fspath(path)} ({shown}); name it {output_extensions()}"
        )
    return OUTPUT_FORMATS[suffix]


def software_tag() -> str:
    """The Software value written into decoded images: ``raqcodec <version>``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{MARKER} {version('raqcodec')}"
    except PackageNotFoundError:
        return MARKER


def is_marker(value: object) -> bool:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return isinstance(value, str) and value.strip().startswith(MARKER)
