"""EXIF orientation, the metadata a ``.raq`` file does not keep, and animation frames: what reading an
image applies or reports in its notes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import ExifTags, Image

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


def orientation_of(img: Image.Image, notes: list[str]) -> int:
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


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    return _ORIENTATIONS[orientation](array)


def file_notes(img: Image.Image, name: str) -> list[str]:
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
