"""Reference codecs for rate-distortion comparisons: Pillow's JPEG, WebP and AVIF at a quality setting.

Each codec encodes 8-bit RGB in memory and decodes its own bytes back to 8-bit RGB, so a comparison sees
exactly the file a user would store. The settings are the strongest ones Pillow offers without changing
the format's defaults otherwise (chroma stays 4:2:0 everywhere):

* JPEG: libjpeg(-turbo) with ``optimize=True`` (optimal Huffman tables); quality 1..100.
* WebP: libwebp lossy with ``method=6`` (slowest, best); quality 0..100.
* AVIF: libavif (Pillow >= 11.3 builds it in) at its default speed 6; quality 0..100. ``max_threads=1``:
  the encoder's output does not then depend on the machine, and parallel runs do not oversubscribe it.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL
from PIL import Image, features

from ..errors import BaselineUnavailable
from . import BASELINES as NAMES


@dataclass(frozen=True)
class Baseline:
    name: str
    pillow_format: str
    feature: str  # PIL.features name of the library
    qualities: tuple[int, int]  # the accepted quality range, inclusive
    options: dict[str, Any]
    description: str


BASELINES: dict[str, Baseline] = {
    "jpeg": Baseline(
        "jpeg", "JPEG", "jpg", (1, 100), {"optimize": True}, "Pillow JPEG (libjpeg-turbo), optimize=True, 4:2:0"
    ),
    "webp": Baseline("webp", "WEBP", "webp", (0, 100), {"method": 6}, "Pillow WebP (libwebp) lossy, method=6"),
    "avif": Baseline(
        "avif", "AVIF", "avif", (0, 100), {"max_threads": 1}, "Pillow AVIF (libavif), speed 6, 4:2:0, max_threads=1"
    ),
}


@dataclass(frozen=True)
class Coded:
    data: bytes
    decoded: np.ndarray  # (H, W, 3) uint8
    encode_s: float
    decode_s: float


def get(name: str) -> Baseline:
    """The baseline called ``name``, after checking this Pillow can encode it."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r} (choose from {', '.join(NAMES)})")
    baseline = BASELINES[name]
    if not features.check(baseline.feature):
        raise BaselineUnavailable(
            f"this Pillow ({PIL.__version__}) was built without {baseline.pillow_format} "
            f"support; install a Pillow with {baseline.feature} or drop {name} from --baselines"
        )
    return baseline


def library_version(name: str) -> str | None:
    """Version of the library behind a baseline, as Pillow reports it (None when unknown)."""
    try:
        return features.version(BASELINES[name].feature)
    except (ValueError, KeyError):
        return None


def encode(name: str, rgb: np.ndarray, quality: int) -> tuple[bytes, float]:
    """The file bytes of ``rgb`` (H, W, 3 uint8) at ``quality``, and the seconds it took."""
    baseline = get(name)
    lo, hi = baseline.qualities
    if not (isinstance(quality, int) and lo <= quality <= hi):
        raise ValueError(f"{name} quality must be an integer in {lo}..{hi}, got {quality!r}")
    image = Image.fromarray(rgb, "RGB")
    buf = io.BytesIO()
    started = time.perf_counter()
    image.save(buf, baseline.pillow_format, quality=quality, **baseline.options)
    return buf.getvalue(), time.perf_counter() - started


def decode(data: bytes) -> tuple[np.ndarray, float]:
    """8-bit RGB pixels of an encoded file, and the seconds it took."""
    started = time.perf_counter()
    with Image.open(io.BytesIO(data)) as img:
        rgb = np.asarray(img.convert("RGB"))
    return rgb, time.perf_counter() - started


def code(name: str, rgb: np.ndarray, quality: int) -> Coded:
    """Encode and decode one image: the bytes, the decoded pixels and both timings."""
    data, encode_s = encode(name, rgb, quality)
    decoded, decode_s = decode(data)
    return Coded(data, decoded, encode_s, decode_s)
