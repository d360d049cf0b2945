"""16-bit RGB, RGBA and gray+alpha PNGs, which Pillow 13 opens keeping only the high byte of each sample.

Pillow opens 16-bit gray PNGs as "I;16" (full precision) but has no 16-bit RGB mode: 16-bit RGB, RGBA and
gray+alpha PNGs open as 8-bit "RGB"/"RGBA" keeping only the high byte of each sample (truncation). Here the
file is decoded a second time with a rawmode that yields the low bytes and the 16-bit samples are rebuilt;
``raqcodec.io.images`` then rounds them to 8 bits like every other 16-bit source. If that ever stops
working (a Pillow change), the truncated samples are used and a note says so.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # every complete PNG ends with this IEND chunk
# Rawmodes Pillow 13 uses for the 16-bit PNG colour types it truncates to 8 bits.
_PNG_GRAY_ALPHA, _PNG_RGB, _PNG_RGBA = 4, 2, 6
_PNG_WIDE_RAWMODES = {_PNG_RGB: "RGB;16B", _PNG_RGBA: "RGBA;16B", _PNG_GRAY_ALPHA: "LA;16B"}
# The 8-bit mode Pillow 13 opens those as.
_PNG_TRUNCATED_MODES = {_PNG_RGB: "RGB", _PNG_RGBA: "RGBA", _PNG_GRAY_ALPHA: "RGBA"}

# PNG and similar sources are re-read for 16-bit recovery: kept as a path or as the file's bytes.
Reopenable = Path | bytes


def reopen(source: Reopenable) -> Path | io.BytesIO:
    """Something Image.open reads from the start: the path, or a fresh view of the bytes."""
    return io.BytesIO(source) if isinstance(source, bytes) else source


def split_rgba(rgba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return rgba[..., :3], rgba[..., 3]


def _with_key(color: np.ndarray, img: Image.Image, notes: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Turn a PNG/GIF transparent colour key (info['transparency']) into alpha."""
    key = img.info.get("transparency")
    if key is None:
        return color, None
    return color, key_alpha(color, key, notes)


def key_alpha(color: np.ndarray, key: object, notes: list[str]) -> np.ndarray | None:
    gray_key = color.ndim == 2 and isinstance(key, int)
    rgb_key = color.ndim == 3 and isinstance(key, tuple) and len(key) == 3
    if not (gray_key or rgb_key):
        notes.append(f"transparency entry {key!r} not understood; ignored")
        return None
    hit = color == np.asarray(key) if gray_key else np.all(color == np.asarray(key), axis=-1)
    opaque = np.iinfo(color.dtype).max
    notes.append("transparent colour key converted to an alpha channel")
    return np.where(hit, 0, opaque).astype(color.dtype)


def _png_header(source: Reopenable) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR, None if not a PNG."""
    if isinstance(source, bytes):
        head = source[:26]
    else:
        try:
            with open(source, "rb") as fh:
                head = fh.read(26)
        except OSError:
            return None
    if len(head) < 26 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def truncated_png16(img: Image.Image, png_source: Reopenable | None) -> int | None:
    """PNG colour type if this is a 16-bit PNG that Pillow truncated, else None."""
    header = _png_header(png_source) if png_source is not None else None
    if header is None or header[0] != 16:
        return None
    colour_type = header[1]
    if _PNG_TRUNCATED_MODES.get(colour_type) != img.mode:
        return None  # not the layout Pillow 13 gives; use the generic path
    return colour_type


def png16_pixels(
    img: Image.Image, path: Reopenable, colour_type: int, notes: list[str]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Full 16-bit samples of a PNG that Pillow opened truncated to 8 bits."""
    high = np.asarray(img)  # Pillow's decode: high bytes, gray+alpha as RGBA
    if colour_type == _PNG_GRAY_ALPHA:
        high = np.stack([high[..., 0], high[..., 3]], axis=-1)
    wide = _png16_samples(path, colour_type, high)
    exact = wide is not None
    if wide is None:
        notes.append("Pillow decoded only the high 8 bits of each 16-bit sample; samples are truncated, not rounded")
        wide = high.astype(np.uint16) * 257  # v * 257 rounds back to v exactly
    if colour_type == _PNG_GRAY_ALPHA:
        return wide[..., 0], wide[..., 1]
    if colour_type == _PNG_RGBA:
        return split_rgba(wide)
    key = img.info.get("transparency")
    if key is None:
        return wide, None
    if not exact and isinstance(key, tuple):
        key = tuple((k >> 8) * 257 for k in key)  # compare like with like
    return wide, key_alpha(wide, key, notes)


def _png16_samples(path: Reopenable, colour_type: int, high: np.ndarray) -> np.ndarray | None:
    """Rebuild 16-bit samples by decoding again with a low-byte rawmode.

    Pillow's PNG decoder unfilters with the rawmode's bits per pixel, so a
    rawmode of the same width that picks other bytes is exact: "RGB;16L" on
    big-endian data yields the low bytes; "RGBA" on 16-bit gray+alpha yields
    all four bytes. None if Pillow's internals differ from what we expect.
    """
    expected = _PNG_WIDE_RAWMODES[colour_type]
    try:
        if colour_type == _PNG_GRAY_ALPHA:
            raw = _decode_png_as(path, expected, "RGBA").astype(np.uint16)
            wide = np.stack([raw[..., 0] << 8 | raw[..., 1], raw[..., 2] << 8 | raw[..., 3]], -1)
        else:
            low = _decode_png_as(path, expected, expected[:-1] + "L")
            wide = high.astype(np.uint16) << 8 | low.astype(np.uint16)
    except (OSError, ValueError, SyntaxError, EOFError, AttributeError, TypeError):
        return None
    if wide.shape != high.shape or not np.array_equal(wide >> 8, high):
        return None  # sanity check: the high bytes must match Pillow's decode
    return wide


def _decode_png_as(path: Reopenable, expected: str, rawmode: str) -> np.ndarray:
    with Image.open(reopen(path)) as img:
        if not img.tile or any(t.codec_name != "zip" or t.args != expected for t in img.tile):
            raise ValueError("unexpected PNG tile layout")
        img.tile = [t._replace(args=rawmode) for t in img.tile]
        img.load()
        return np.asarray(img)
