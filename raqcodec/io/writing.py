"""Writing decoded images, atomically and marked as raqcodec's, in every output format the command line offers
(``raqcodec.io.formats``), and recognising the files raqcodec wrote."""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, PngImagePlugin

from ..errors import ImageError
from . import formats
from .atomic import atomic_path
from .png16 import PNG_END


def save_png(image: Image.Image, path: Path) -> None:
    """Write image as a PNG at path atomically (``io.atomic.atomic_path``), marked as raqcodec's.

    Readers never see a half-written file and a failed save leaves nothing
    behind. Overwrite policy is the caller's; an existing file is replaced.
    """
    save_image(image, Path(path), formats.OUTPUT_FORMATS[".png"])


def save_image(
    image: Image.Image, target: Path | BinaryIO, fmt: formats.OutputFormat, quality: int = formats.DEFAULT_JPEG_QUALITY
) -> list[str]:
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
                    fh.seek(-len(PNG_END), os.SEEK_END)
                    if fh.read() != PNG_END:
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
