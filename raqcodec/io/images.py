"""Reading source images, with no silent data loss (writing decoded ones: ``raqcodec.io.writing``).

The model codes 8-bit RGB. Everything else a user may feed in (grayscale,
palettes, alpha, 16-bit samples, CMYK, EXIF orientation, metadata, animation)
gets a deliberate behaviour here, and each behaviour that applies to a given
file is reported as a one-line note in ``SourceImage.notes``.

16-bit PNGs and Pillow 13: Pillow opens 16-bit gray PNGs as "I;16" (full
precision) but has no 16-bit RGB mode: 16-bit RGB, RGBA and gray+alpha PNGs
open as 8-bit "RGB"/"RGBA" keeping only the high byte of each sample
(truncation). For those we decode the file a second time with a rawmode that
yields the low bytes, rebuild the 16-bit samples and then round them to 8 bits
like every other 16-bit source. If that ever stops working (a Pillow change),
we fall back to Pillow's truncated samples and say so in a note.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ImageError
from .metadata import file_notes, orient, orientation_of
from .png16 import Reopenable, key_alpha, png16_pixels, reopen, split_rgba, truncated_png16

__all__ = ["ImageError", "SourceImage", "crop", "load_image", "pad_to_multiple", "to_pil"]

_COLOUR_CONVERTED = ("CMYK", "YCbCr", "LAB", "HSV")
_SIXTEEN_BIT_GRAY = ("I;16", "I;16B", "I;16L", "I;16N")


# What load_image takes: a path, the bytes of an image file, a binary file object, a Pillow image, an array.
ImageSource = str | os.PathLike | bytes | bytearray | memoryview | IO[bytes] | Image.Image | np.ndarray
# PNG and similar sources are re-read for 16-bit recovery: kept as a path or as the file's bytes.


@dataclass
class SourceImage:
    """An image ready for the model, plus what the decoder must give back.

    rgb: (H, W, 3) uint8; grayscale images have the gray plane replicated.
    mode: "L" or "RGB", the mode of the decoded image.
    alpha: (H, W) uint8, or None when absent or fully opaque.
    bit_depth: 8 or 16, the sample depth of the original.
    notes: one-line notices about deliberate behaviours that applied.
    """

    rgb: np.ndarray
    mode: str
    alpha: np.ndarray | None
    bit_depth: int
    notes: list[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def load_image(source: ImageSource, name: str | None = None) -> SourceImage:
    """Load a file (by path, as bytes or from a binary file object), a Pillow image or an array as 8-bit
    RGB (+ alpha) for coding. ``name``: how messages call the image (default: its path).

    Raises ImageError with a user-facing sentence for anything unusable;
    Pillow and OS errors never escape from here.
    """
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, Image.Image):
        name = name or getattr(source, "filename", "") or "image"
        with _pillow_errors(name):
            source.load()  # a lazily opened image may still be undecoded
            return _from_pil(source, name, png_source=None)
    if isinstance(source, (str, os.PathLike)):
        return _from_file(Path(source), name or str(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _from_file(bytes(source), name or "image data")
    if callable(getattr(source, "read", None)):
        label = name or str(getattr(source, "name", "") or "image file")
        with _pillow_errors(label):
            data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError(f"{label} is not open in binary mode")
        return _from_file(bytes(data), label)
    raise ImageError(
        f"cannot load an image from {type(source).__name__}: give a path, image file bytes, a "
        "binary file object, a PIL image or a numpy array"
    )


def to_pil(rgb: np.ndarray, mode: str, alpha: np.ndarray | None, bit_depth: int) -> Image.Image:
    """Build the decoded image the user gets, undoing load_image's widening.

    mode "L": gray is channel 0 when the three channels agree, otherwise the
    rounded channel mean (r + g + b + 1) // 3. With alpha: "LA" or "RGBA".
    bit_depth 16 gives an "I;16" image (values v * 257) for gray without
    alpha. Pillow has no 16-bit RGB, RGBA or LA modes and cannot write such
    PNGs, so those are returned at 8 bits; load_image's note says so.
    """
    rgb = _check_decoded(rgb, alpha)
    if mode == "L":
        gray = _gray_from_rgb(rgb)
        if alpha is not None:
            return Image.fromarray(np.stack([gray, alpha], axis=-1))
        if bit_depth == 16:
            return Image.fromarray(gray.astype(np.uint16) * 257)
        return Image.fromarray(gray)
    if mode == "RGB":
        if alpha is not None:
            return Image.fromarray(np.concatenate([rgb, alpha[..., None]], axis=-1))
        return Image.fromarray(rgb)
    raise ValueError(f"mode must be 'L' or 'RGB', not {mode!r}")


def pad_to_multiple(rgb: np.ndarray, multiple: int) -> np.ndarray:
    """Edge-replicate rows/columns at bottom/right up to multiples of `multiple`.

    Returns the input itself when no padding is needed.
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, not {multiple}")
    if rgb.ndim < 2 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"cannot pad an array of shape {rgb.shape}")
    pad_h = -rgb.shape[0] % multiple
    pad_w = -rgb.shape[1] % multiple
    if pad_h == 0 and pad_w == 0:
        return rgb
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (rgb.ndim - 2)
    return np.pad(rgb, widths, mode="edge")


def crop(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """The top-left height x width region (undoes pad_to_multiple); a view."""
    if not (0 < height <= rgb.shape[0] and 0 < width <= rgb.shape[1]):
        raise ValueError(f"cannot crop {rgb.shape[:2]} to {(height, width)}")
    return rgb[:height, :width]


# --------------------------------------------------------------------------
# Opening files, with every Pillow failure turned into an ImageError
# --------------------------------------------------------------------------


def _from_file(source: Reopenable, name: str) -> SourceImage:
    with _pillow_errors(name), Image.open(reopen(source)) as img:
        img.load()  # decode everything now, so truncation is found here
        return _from_pil(img, name, png_source=source if img.format == "PNG" else None)


@contextlib.contextmanager
def _pillow_errors(name: str) -> Iterator[None]:
    """Map Pillow/OS failures to ImageError; treat bomb warnings as errors."""
    with warnings.catch_warnings():
        # Pillow only warns between 1x and 2x the limit; we refuse both.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(_bomb_message(name, str(exc))) from exc
        except UnidentifiedImageError as exc:
            raise ImageError(f"{name} is not an image Pillow can read") from exc
        except PermissionError as exc:
            raise ImageError(f"{name} cannot be read: permission denied") from exc
        except FileNotFoundError as exc:
            raise ImageError(f"{name} does not exist") from exc
        except IsADirectoryError as exc:
            raise ImageError(f"{name} is a directory, not an image file") from exc
        except MemoryError as exc:
            raise ImageError(f"{name} is too large to decode in memory") from exc
        except Exception as exc:  # noqa: BLE001
            # Corrupt or truncated data surfaces as OSError, SyntaxError,
            # ValueError, EOFError, struct errors and more, depending on the
            # format plugin; the user gets one sentence, the cause is chained.
            raise ImageError(f"{name} is damaged or truncated and cannot be decoded ({exc})") from exc


def _bomb_message(name: str, pillow_message: str) -> str:
    match = re.search(r"\((\d+) pixels\)", pillow_message)
    pixels = f"{match[1]} pixels" if match else "too many pixels"
    return (
        f"{name} has {pixels}, over Pillow's decompression-bomb limit of "
        f"{Image.MAX_IMAGE_PIXELS}; refusing to decode it"
    )


# --------------------------------------------------------------------------
# Pillow image -> SourceImage
# --------------------------------------------------------------------------


def _from_pil(img: Image.Image, name: str, png_source: Reopenable | None) -> SourceImage:
    """Shared by files and Pillow images; png_source (the PNG's path or bytes) enables the 16-bit recovery."""
    if img.width == 0 or img.height == 0:
        raise ImageError(f"{name} is empty ({img.width}x{img.height} pixels)")
    notes: list[str] = []
    orientation = orientation_of(img, notes)
    colour_type = truncated_png16(img, png_source)
    if png_source is not None and colour_type is not None:
        color, alpha = png16_pixels(img, png_source, colour_type, notes)
        bit_depth = 16
    else:
        color, alpha = _pixels(img, name, notes)
        bit_depth = 16 if color.dtype == np.uint16 else 8
    color = orient(color, orientation)
    alpha = None if alpha is None else orient(alpha, orientation)
    return _finish(color, alpha, bit_depth, notes, name, tail_notes=file_notes(img, name))


def _pixels(img: Image.Image, name: str, notes: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Colour plane(s) and alpha in file orientation, uint8 or uint16.

    A 2-D colour array means grayscale, (H, W, 3) means RGB.
    """
    mode = img.mode
    if mode == "1":
        notes.append("1-bit image coded as 8-bit gray; the decoded PNG is 8-bit gray")
        return _with_key(np.asarray(_convert(img, "L", name)), img, notes)
    if mode == "L":
        return _with_key(np.asarray(img), img, notes)
    if mode in _SIXTEEN_BIT_GRAY:
        return _with_key(np.asarray(img).astype(np.uint16), img, notes)
    if mode == "I":
        return _with_key(_int32_to_uint16(np.asarray(img), notes), img, notes)
    if mode == "F":
        notes.append("32-bit float samples rounded and clipped to 0..255 gray")
        return _float_to_uint8(np.asarray(img)), None
    if mode in ("LA", "La"):
        if mode == "La":
            notes.append("premultiplied alpha (La) converted to straight alpha")
        planes = np.asarray(_convert(img, "LA", name))
        return planes[..., 0], planes[..., 1]
    if mode in ("P", "PA"):
        if mode == "P" and "transparency" not in img.info:
            notes.append("palette image coded as RGB; the decoded PNG is RGB, not paletted")
            return np.asarray(_convert(img, "RGB", name)), None
        notes.append(
            "palette image with transparency coded as RGBA (colour plus alpha); the decoded PNG is RGBA, not paletted"
        )
        return split_rgba(np.asarray(_convert(img, "RGBA", name)))
    if mode == "RGB":
        return _with_key(np.asarray(img), img, notes)
    if mode == "RGBX":
        return np.asarray(_convert(img, "RGB", name)), None
    if mode in ("RGBA", "RGBa"):
        if mode == "RGBa":
            notes.append("premultiplied alpha (RGBa) converted to straight alpha")
        return split_rgba(np.asarray(_convert(img, "RGBA", name)))
    if mode in _COLOUR_CONVERTED:
        how = " with Pillow's plain formula (no colour management)" if mode == "CMYK" else ""
        notes.append(f"{mode} converted to RGB{how}")
        return np.asarray(_convert(img, "RGB", name)), None
    raise ImageError(f"{name} has pixel mode {mode}, which raqcodec cannot code")


def _convert(img: Image.Image, mode: str, name: str) -> Image.Image:
    if img.mode == mode:
        return img
    try:
        return img.convert(mode)
    except (ValueError, OSError) as exc:
        raise ImageError(f"{name}: cannot convert pixel mode {img.mode} to {mode} ({exc})") from exc


def _with_key(color: np.ndarray, img: Image.Image, notes: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Turn a PNG/GIF transparent colour key (info['transparency']) into alpha."""
    key = img.info.get("transparency")
    if key is None:
        return color, None
    return color, key_alpha(color, key, notes)


def _int32_to_uint16(values: np.ndarray, notes: list[str]) -> np.ndarray:
    """Mode "I" holds 32-bit ints; 16-bit gray is the only sensible reading."""
    if values.size and (values.min() < 0 or values.max() > 65535):
        notes.append("32-bit integer samples clipped to 0..65535")
    return np.clip(values, 0, 65535).astype(np.uint16)


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------


def _from_array(array: np.ndarray) -> SourceImage:
    if array.dtype.kind != "u" or array.dtype.itemsize not in (1, 2):
        raise ImageError(f"array dtype {array.dtype} is not supported; use uint8 or uint16")
    dtype = np.uint8 if array.dtype.itemsize == 1 else np.uint16
    array = array.astype(dtype, copy=False)
    if array.ndim == 2:
        color, alpha = array, None
    elif array.ndim == 3 and array.shape[2] == 3:
        color, alpha = array, None
    elif array.ndim == 3 and array.shape[2] == 4:
        color, alpha = split_rgba(array)
    else:
        raise ImageError(f"array of shape {array.shape} is not an image; expected (H, W), (H, W, 3) or (H, W, 4)")
    return _finish(color, alpha, 16 if dtype == np.uint16 else 8, [], "array")


def _finish(
    color: np.ndarray,
    alpha: np.ndarray | None,
    bit_depth: int,
    notes: list[str],
    name: str,
    tail_notes: list[str] | None = None,
) -> SourceImage:
    """Reduce to 8 bits, widen gray to RGB, drop opaque alpha, add notes."""
    if color.shape[0] == 0 or color.shape[1] == 0:
        raise ImageError(f"{name} is empty ({color.shape[1]}x{color.shape[0]} pixels)")
    mode = "L" if color.ndim == 2 else "RGB"
    color8 = _to_uint8(color)
    rgb = np.repeat(color8[..., None], 3, axis=2) if mode == "L" else color8
    alpha8 = None if alpha is None else _to_uint8(alpha)
    if alpha8 is not None and bool(np.all(alpha8 == 255)):
        notes.append("alpha channel is fully opaque: dropped (nothing lost)")
        alpha8 = None
    if bit_depth == 16:
        notes.append(_depth_note(mode, alpha8 is not None))
    return SourceImage(
        rgb=np.array(rgb, dtype=np.uint8, order="C", copy=True),
        mode=mode,
        alpha=None if alpha8 is None else np.array(alpha8, dtype=np.uint8, order="C", copy=True),
        bit_depth=bit_depth,
        notes=notes + (tail_notes or []),
    )


_CONVERT_ROWS_ELEMENTS = 1 << 22  # samples per step of _to_uint8: its int64 temporaries stay near 32 MB


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """16-bit samples to 8 bits with rounding, in integers: (v*255+32767)//65535. Done a band of rows at
    a time: widening a whole 48 MP RGB image to int64 would take 1.2 GB."""
    if values.dtype == np.uint8:
        return values
    out = np.empty(values.shape, np.uint8)
    rows = max(1, _CONVERT_ROWS_ELEMENTS // max(1, values[0].size))
    for top in range(0, len(values), rows):
        wide = values[top : top + rows].astype(np.int64)
        out[top : top + rows] = np.clip((wide * 255 + 32767) // 65535, 0, 255)
    return out


def _depth_note(mode: str, has_alpha: bool) -> str:
    # Only 16-bit gray without alpha can be written back by Pillow ("I;16").
    if mode == "L" and not has_alpha:
        return "16-bit samples reduced to 8 bits before coding; the decoded PNG is written at 16 bits"
    return (
        "16-bit samples reduced to 8 bits before coding; the decoded PNG is written at 8 bits "
        "(Pillow cannot write 16-bit RGB or gray+alpha PNGs)"
    )


# --------------------------------------------------------------------------
# Output helpers
# --------------------------------------------------------------------------


def _check_decoded(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if alpha is not None and (alpha.shape != rgb.shape[:2] or alpha.dtype != np.uint8):
        raise ValueError(f"alpha must be (H, W) uint8 matching rgb, got {alpha.shape} {alpha.dtype}")
    return rgb


def _gray_from_rgb(rgb: np.ndarray) -> np.ndarray:
    """Channel 0 if the decoder kept the channels equal, else their rounded mean."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    if np.array_equal(r, g) and np.array_equal(r, b):
        return np.ascontiguousarray(r)
    total = r.astype(np.uint16) + g + b + 1
    return (total // 3).astype(np.uint8)
