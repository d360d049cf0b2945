"""Reading source images and writing decoded ones, with no silent data loss.

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
import io
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO

import numpy as np
from PIL import ExifTags, Image, PngImagePlugin, UnidentifiedImageError

from . import formats
from .fileio import atomic_path

__all__ = [
    "ImageError",
    "SourceImage",
    "crop",
    "load_image",
    "pad_to_multiple",
    "psnr",
    "save_image",
    "save_png",
    "to_pil",
    "written_by_raqcodec",
]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # every complete PNG ends with this IEND chunk
# Rawmodes Pillow 13 uses for the 16-bit PNG colour types it truncates to 8 bits.
_PNG_GRAY_ALPHA, _PNG_RGB, _PNG_RGBA = 4, 2, 6
_PNG_WIDE_RAWMODES = {_PNG_RGB: "RGB;16B", _PNG_RGBA: "RGBA;16B", _PNG_GRAY_ALPHA: "LA;16B"}
# The 8-bit mode Pillow 13 opens those as.
_PNG_TRUNCATED_MODES = {_PNG_RGB: "RGB", _PNG_RGBA: "RGBA", _PNG_GRAY_ALPHA: "RGBA"}
_COLOUR_CONVERTED = ("CMYK", "YCbCr", "LAB", "HSV")
_SIXTEEN_BIT_GRAY = ("I;16", "I;16B", "I;16L", "I;16N")


class ImageError(ValueError):
    """An input the codec cannot use, explained in one sentence for the user."""


# What load_image takes: a path, the bytes of an image file, a binary file object, a Pillow image, an array.
ImageSource = str | os.PathLike | bytes | bytearray | memoryview | IO[bytes] | Image.Image | np.ndarray
# PNG and similar sources are re-read for 16-bit recovery: kept as a path or as the file's bytes.
_Reopenable = Path | bytes


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
    raise ImageError(f"cannot load an image from {type(source).__name__}: give a path, image file bytes, a "
                     "binary file object, a PIL image or a numpy array")


def to_pil(
    rgb: np.ndarray, mode: str, alpha: np.ndarray | None, bit_depth: int
) -> Image.Image:
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


def save_png(image: Image.Image, path: Path) -> None:
    """Write image as a PNG at path atomically (``fileio.atomic_path``), marked as raqcodec's.

    Readers never see a half-written file and a failed save leaves nothing
    behind. Overwrite policy is the caller's; an existing file is replaced.
    """
    save_image(image, Path(path), formats.OUTPUT_FORMATS[".png"])


def save_image(image: Image.Image, target: Path | BinaryIO, fmt: formats.OutputFormat,
               quality: int = formats.DEFAULT_JPEG_QUALITY) -> list[str]:
    """Write a decoded image in ``fmt`` (``formats.OUTPUT_FORMATS``) with raqcodec's marker, to a path
    (atomically) or to a binary file object (stdout). Returns notes on what the format changed (16-bit
    gray written at 8 bits); raises ImageError when the format cannot hold the image (alpha in JPEG or
    PNM, colour in PGM): nothing is dropped silently."""
    converted, notes = _for_format(image, fmt)
    if isinstance(target, Path):
        with atomic_path(target) as tmp, open(tmp, "wb") as fh:
            _write(converted, fh, fmt, quality)
    else:
        buffer = io.BytesIO()  # whole, so that a failure writes nothing to the stream
        _write(converted, buffer, fmt, quality)
        target.write(buffer.getvalue())
    return notes


def _for_format(image: Image.Image, fmt: formats.OutputFormat) -> tuple[Image.Image, list[str]]:
    notes: list[str] = []
    has_alpha = image.mode in ("LA", "RGBA")
    if has_alpha and not fmt.alpha:
        raise ImageError(f"{fmt.description} cannot hold the image's alpha channel; write .png, .webp or .tif")
    if fmt.name == "PNM" and fmt.gray and image.mode not in ("L", "I;16"):
        raise ImageError("a .pgm file holds gray images and this image is RGB; write .ppm or .png")
    if image.mode == "I;16" and not fmt.sixteen_bit:
        image = _to_8bit(image)
        notes.append(f"16-bit gray written at 8 bits ({fmt.description} holds 8 bits)")
    if not fmt.gray and image.mode in ("L", "LA"):
        image = image.convert("RGBA" if image.mode == "LA" else "RGB")  # the same values in three channels
    return image, notes


def _to_8bit(image: Image.Image) -> Image.Image:
    if image.mode != "I;16":
        return image
    values = np.asarray(image).astype(np.uint32)
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8))  # _to_uint8's rounding


def _write(image: Image.Image, fh: BinaryIO, fmt: formats.OutputFormat, quality: int) -> None:
    tag = formats.software_tag()
    if fmt.name == "PNM":
        _write_pnm(image, fh, tag, gray=fmt.gray)
    elif fmt.name == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text("Software", tag)  # a tEXt chunk before IDAT: still there in a cut-short file
        image.save(fh, format="PNG", pnginfo=info)
    elif fmt.name == "TIFF":
        image.save(fh, format="TIFF", compression="tiff_adobe_deflate", software=tag)
    else:  # JPEG and WebP carry the Software tag in their EXIF
        exif = Image.Exif()
        exif[formats.EXIF_SOFTWARE] = tag
        if fmt.name == "JPEG":
            image.save(fh, format="JPEG", quality=quality, exif=exif.tobytes())
        else:
            image.save(fh, format="WEBP", lossless=True, exact=True, exif=exif.tobytes())


def _write_pnm(image: Image.Image, fh: BinaryIO, tag: str, gray: bool) -> None:
    """Binary PGM (P5) or PPM (P6), 8 or 16 bits, with raqcodec's marker as a header comment (Pillow's
    writer has no comments). 16-bit samples are big-endian, as the format says."""
    values = np.asarray(image)
    if image.mode == "I;16":
        values = values.astype(">u2")
    if not gray and values.ndim == 2:
        values = np.repeat(values[..., None], 3, axis=2)
    maxval = 65535 if values.dtype.itemsize == 2 else 255
    kind = "P5" if values.ndim == 2 else "P6"
    fh.write(f"{kind}\n# {tag}\n{image.width} {image.height}\n{maxval}\n".encode("ascii"))
    fh.write(np.ascontiguousarray(values).tobytes())


def written_by_raqcodec(path: Path) -> tuple[bool, str | None]:
    """(whether the image file at ``path`` carries raqcodec's marker, why it is incomplete or None).

    A file that does not even open as an image is not raqcodec's. Completeness: PNG by Pillow's verify()
    and its closing IEND chunk, the others by decoding them whole."""
    with warnings.catch_warnings():  # Pillow warns about damaged EXIF; the answer is what matters here
        warnings.simplefilter("ignore")
        return _examine(path)


def _examine(path: Path) -> tuple[bool, str | None]:
    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
        if head[:2] in (b"P5", b"P6"):
            marked = bool(re.match(rb"P[56]\s+#\s*" + formats.MARKER.encode(), head))
        else:
            with Image.open(path) as img:
                marked = _marked(img)
        if not marked:
            return False, None
    except Exception:  # noqa: BLE001 - unreadable as an image: not one raqcodec wrote
        return False, None
    try:
        with Image.open(path) as img:
            if img.format == "PNG":
                img.verify()
                with open(path, "rb") as fh:
                    fh.seek(-len(_PNG_END), os.SEEK_END)
                    if fh.read() != _PNG_END:
                        return True, "truncated PNG file (no IEND chunk at its end)"
            else:
                img.load()
    except Exception as exc:  # noqa: BLE001 - any defect means: not complete, redo it
        return True, str(exc) or type(exc).__name__
    return True, None


def _marked(img: Image.Image) -> bool:
    if img.format == "PNG":
        return formats.is_marker(img.info.get("Software"))
    return formats.is_marker(img.getexif().get(formats.EXIF_SOFTWARE))


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


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB over the 0..255 range, all channels together; inf if equal."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mse)


# --------------------------------------------------------------------------
# Opening files, with every Pillow failure turned into an ImageError
# --------------------------------------------------------------------------


def _from_file(source: _Reopenable, name: str) -> SourceImage:
    with _pillow_errors(name), Image.open(_reopen(source)) as img:
        img.load()  # decode everything now, so truncation is found here
        return _from_pil(img, name, png_source=source if img.format == "PNG" else None)


def _reopen(source: _Reopenable) -> Path | io.BytesIO:
    """Something Image.open reads from the start: the path, or a fresh view of the bytes."""
    return io.BytesIO(source) if isinstance(source, bytes) else source


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


def _from_pil(img: Image.Image, name: str, png_source: _Reopenable | None) -> SourceImage:
    """Shared by files and Pillow images; png_source (the PNG's path or bytes) enables the 16-bit recovery."""
    if img.width == 0 or img.height == 0:
        raise ImageError(f"{name} is empty ({img.width}x{img.height} pixels)")
    notes: list[str] = []
    orientation = _orientation(img, notes)
    colour_type = _truncated_png16(img, png_source)
    if png_source is not None and colour_type is not None:
        color, alpha = _png16_pixels(img, png_source, colour_type, notes)
        bit_depth = 16
    else:
        color, alpha = _pixels(img, name, notes)
        bit_depth = 16 if color.dtype == np.uint16 else 8
    color = _orient(color, orientation)
    alpha = None if alpha is None else _orient(alpha, orientation)
    return _finish(color, alpha, bit_depth, notes, name, tail_notes=_file_notes(img, name))


def _pixels(
    img: Image.Image, name: str, notes: list[str]
) -> tuple[np.ndarray, np.ndarray | None]:
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
        notes.append("palette image with transparency coded as RGBA (colour plus alpha); the decoded PNG is "
                     "RGBA, not paletted")
        return _split_rgba(np.asarray(_convert(img, "RGBA", name)))
    if mode == "RGB":
        return _with_key(np.asarray(img), img, notes)
    if mode == "RGBX":
        return np.asarray(_convert(img, "RGB", name)), None
    if mode in ("RGBA", "RGBa"):
        if mode == "RGBa":
            notes.append("premultiplied alpha (RGBa) converted to straight alpha")
        return _split_rgba(np.asarray(_convert(img, "RGBA", name)))
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


def _split_rgba(rgba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return rgba[..., :3], rgba[..., 3]


def _with_key(
    color: np.ndarray, img: Image.Image, notes: list[str]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Turn a PNG/GIF transparent colour key (info['transparency']) into alpha."""
    key = img.info.get("transparency")
    if key is None:
        return color, None
    return color, _key_alpha(color, key, notes)


def _key_alpha(color: np.ndarray, key: object, notes: list[str]) -> np.ndarray | None:
    gray_key = color.ndim == 2 and isinstance(key, int)
    rgb_key = color.ndim == 3 and isinstance(key, tuple) and len(key) == 3
    if not (gray_key or rgb_key):
        notes.append(f"transparency entry {key!r} not understood; ignored")
        return None
    hit = color == np.asarray(key) if gray_key else np.all(color == np.asarray(key), axis=-1)
    opaque = np.iinfo(color.dtype).max
    notes.append("transparent colour key converted to an alpha channel")
    return np.where(hit, 0, opaque).astype(color.dtype)


def _int32_to_uint16(values: np.ndarray, notes: list[str]) -> np.ndarray:
    """Mode "I" holds 32-bit ints; 16-bit gray is the only sensible reading."""
    if values.size and (values.min() < 0 or values.max() > 65535):
        notes.append("32-bit integer samples clipped to 0..65535")
    return np.clip(values, 0, 65535).astype(np.uint16)


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------
# 16-bit RGB / RGBA / gray+alpha PNGs (Pillow 13 keeps only the high byte)
# --------------------------------------------------------------------------


def _png_header(source: _Reopenable) -> tuple[int, int] | None:
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


def _truncated_png16(img: Image.Image, png_source: _Reopenable | None) -> int | None:
    """PNG colour type if this is a 16-bit PNG that Pillow truncated, else None."""
    header = _png_header(png_source) if png_source is not None else None
    if header is None or header[0] != 16:
        return None
    colour_type = header[1]
    if _PNG_TRUNCATED_MODES.get(colour_type) != img.mode:
        return None  # not the layout Pillow 13 gives; use the generic path
    return colour_type


def _png16_pixels(
    img: Image.Image, path: _Reopenable, colour_type: int, notes: list[str]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Full 16-bit samples of a PNG that Pillow opened truncated to 8 bits."""
    high = np.asarray(img)  # Pillow's decode: high bytes, gray+alpha as RGBA
    if colour_type == _PNG_GRAY_ALPHA:
        high = np.stack([high[..., 0], high[..., 3]], axis=-1)
    wide = _png16_samples(path, colour_type, high)
    exact = wide is not None
    if wide is None:
        notes.append(
            "Pillow decoded only the high 8 bits of each 16-bit sample; "
            "samples are truncated, not rounded"
        )
        wide = high.astype(np.uint16) * 257  # v * 257 rounds back to v exactly
    if colour_type == _PNG_GRAY_ALPHA:
        return wide[..., 0], wide[..., 1]
    if colour_type == _PNG_RGBA:
        return _split_rgba(wide)
    key = img.info.get("transparency")
    if key is None:
        return wide, None
    if not exact and isinstance(key, tuple):
        key = tuple((k >> 8) * 257 for k in key)  # compare like with like
    return wide, _key_alpha(wide, key, notes)


def _png16_samples(path: _Reopenable, colour_type: int, high: np.ndarray) -> np.ndarray | None:
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


def _decode_png_as(path: _Reopenable, expected: str, rawmode: str) -> np.ndarray:
    with Image.open(_reopen(path)) as img:
        if not img.tile or any(t.codec_name != "zip" or t.args != expected for t in img.tile):
            raise ValueError("unexpected PNG tile layout")
        img.tile = [t._replace(args=rawmode) for t in img.tile]
        img.load()
        return np.asarray(img)


# --------------------------------------------------------------------------
# Orientation, metadata and frames
# --------------------------------------------------------------------------

# Same transforms as ImageOps.exif_transpose, applied to numpy arrays so that
# 16-bit samples rebuilt outside Pillow get them too.
_ORIENTATIONS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # FLIP_LEFT_RIGHT
    3: lambda a: a[::-1, ::-1],  # ROTATE_180
    4: lambda a: a[::-1],  # FLIP_TOP_BOTTOM
    5: lambda a: a.swapaxes(0, 1),  # TRANSPOSE
    6: lambda a: np.rot90(a, -1),  # ROTATE_270 (90 degrees clockwise)
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],  # TRANSVERSE
    8: lambda a: np.rot90(a, 1),  # ROTATE_90 (counter-clockwise)
}


def _orientation(img: Image.Image, notes: list[str]) -> int:
    """EXIF orientation (Pillow also reads XMP tiff:Orientation); 1 if none."""
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception as exc:  # corrupt EXIF must not stop the pixels  # noqa: BLE001
        notes.append(f"EXIF unreadable ({exc}); orientation not applied")
        return 1
    if value not in _ORIENTATIONS:
        notes.append(f"EXIF orientation {value!r} is invalid; ignored")
        return 1
    if value != 1:
        notes.append(f"EXIF orientation {value} applied: pixels are coded upright")
    return int(value)


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    return _ORIENTATIONS[orientation](array)


def _file_notes(img: Image.Image, name: str) -> list[str]:
    notes = []
    dropped = _metadata_kinds(img)
    if dropped:
        notes.append("metadata not stored: " + ", ".join(dropped))
    frames = _frame_count(img)
    if frames is None:
        notes.append("frame count unreadable; only the first frame is coded")
    elif frames > 1:
        notes.append(f"{name} has {frames} frames; only the first is coded")
    return notes


def _metadata_kinds(img: Image.Image) -> list[str]:
    """Kinds of metadata present that the codec does not carry."""
    info = img.info
    kinds = []
    if _has_exif(img):
        kinds.append("EXIF")
    if info.get("icc_profile"):
        kinds.append("ICC profile")
    if info.get("xmp") or info.get("XML:com.adobe.xmp"):
        kinds.append("XMP")
    if info.get("photoshop"):
        kinds.append("Photoshop/IPTC")
    if _has_png_text(img):
        kinds.append("PNG text chunks")
    if info.get("comment"):
        kinds.append("comment")
    if "gamma" in info or "chromaticity" in info:
        kinds.append("PNG gamma/chromaticity")
    if _has_resolution(img):
        kinds.append("resolution (DPI)")
    return kinds


def _has_resolution(img: Image.Image) -> bool:
    """A stated pixel density: PNG pHYs, or JFIF in dots per inch/cm.

    Not info["dpi"] for JPEG: Pillow invents 72 dpi whenever EXIF lacks it.
    """
    if img.format == "PNG":
        return "dpi" in img.info
    return img.format == "JPEG" and img.info.get("jfif_unit") in (1, 2)


def _has_exif(img: Image.Image) -> bool:
    """EXIF beyond the orientation tag (which we apply, so nothing is lost)."""
    if "Raw profile type exif" in img.info:  # ImageMagick's PNG text chunk
        return True
    raw = img.info.get("exif")
    try:
        if isinstance(raw, bytes) and raw:
            exif = Image.Exif()
            exif.load(raw)
            return any(tag != ExifTags.Base.Orientation for tag in exif) or bool(
                exif.get_ifd(ExifTags.IFD.Exif) or exif.get_ifd(ExifTags.IFD.GPSInfo)
            )
        if img.format == "TIFF":  # TIFF tags are the file structure itself
            exif = img.getexif()
            return ExifTags.IFD.Exif in exif or ExifTags.IFD.GPSInfo in exif
    except Exception:  # unparseable EXIF is still EXIF we drop  # noqa: BLE001
        return True
    return False


def _has_png_text(img: Image.Image) -> bool:
    """tEXt/zTXt/iTXt chunks other than XMP and EXIF (reported as such)."""
    if img.format != "PNG":
        return False
    try:
        text = getattr(img, "text", {}) or {}
    except Exception:  # unreadable trailing chunks: there is text we drop  # noqa: BLE001
        return True
    return any(key not in {"XML:com.adobe.xmp", "Raw profile type exif"} for key in text)


def _frame_count(img: Image.Image) -> int | None:
    try:
        return int(getattr(img, "n_frames", 1))
    except Exception:  # counting frames reads the whole file  # noqa: BLE001
        return None


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
        color, alpha = _split_rgba(array)
    else:
        raise ImageError(
            f"array of shape {array.shape} is not an image; expected (H, W), (H, W, 3) or (H, W, 4)"
        )
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

