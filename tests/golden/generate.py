"""Write the golden streams of the newest format: ``python tests/golden/generate.py`` (repository root).

Writes ``v3-<name>.raq`` (format 3: the model v2 raq-photo2, base stage and residual sections, one of
them trimmed) from small generated images, and records the SHA-256 of each file's decoded pixels in
``manifest.json``. tests/test_golden.py decodes every listed file and compares. Files of earlier versions
stay as they were written by the release that wrote them (``cases()`` made them, with raq-photo): never
regenerate those.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # conftest's image generator

from conftest import smooth_image  # noqa: E402

import raqcodec  # noqa: E402
from raqcodec.io import bitstream  # noqa: E402


def cases() -> dict[str, tuple[Image.Image, int]]:
    rgb = smooth_image(48, 64, seed=7)
    gray16 = Image.fromarray(smooth_image(40, 36, seed=8)[:, :, 0].astype(np.uint16) * 257)
    alpha = np.tile(np.arange(40, dtype=np.uint8) * 6, (32, 1))
    rgba = Image.fromarray(np.dstack([smooth_image(32, 40, seed=9), alpha]))
    return {
        "rgb-k4": (Image.fromarray(rgb), 4),
        "rgb-k64": (Image.fromarray(rgb), 64),
        "rgb-k1024": (Image.fromarray(rgb), 1024),
        "gray16-k32": (gray16, 32),
        "rgba-k128": (rgba, 128),
    }


def cases_v3() -> dict[str, tuple[Image.Image, dict[str, object], dict[str, object] | None]]:
    """name -> (image, encode options, trim options or None)."""
    rgb = Image.fromarray(smooth_image(48, 64, seed=10))
    gray16 = Image.fromarray(smooth_image(40, 36, seed=11)[:, :, 0].astype(np.uint16) * 257)
    alpha = np.tile(np.arange(40, dtype=np.uint8) * 6, (32, 1))
    rgba = Image.fromarray(np.dstack([smooth_image(32, 40, seed=12), alpha]))
    return {
        "rgb-bpp3": (rgb, {"bpp": 3.0}, None),
        "rgb-bpp3-trim2": (rgb, {"bpp": 3.0}, {"groups": 2}),
        "rgb-bpp3-layers": (rgb, {"bpp": 3.0, "layers": (1.0, 2.0)}, None),
        "rgb-bpp3-layers-trim1.5": (rgb, {"bpp": 3.0, "layers": (1.0, 2.0)}, {"bpp": 1.5}),
        "rgb-k64": (rgb, {"codebook_size": 64}, None),
        "gray16-bpp3": (gray16, {"bpp": 3.0}, None),
        "rgba-bpp4": (rgba, {"bpp": 4.0}, None),
    }


def pixels_sha256(image: Image.Image) -> str:
    arr = np.asarray(image)
    return hashlib.sha256(f"{image.mode}|{arr.shape}|{arr.dtype.str}|".encode() + arr.tobytes()).hexdigest()


def main() -> None:
    from raqcodec.trim import trim

    manifest_path = HERE / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    version = bitstream.REFINED_VERSION
    for name, (image, options, cut) in cases_v3().items():
        data = raqcodec.encode(image, model="raq-photo2", **options)  # type: ignore[arg-type]
        if cut is not None:
            data = trim(data, **cut)  # type: ignore[arg-type]
        header = bitstream.read_header(data)
        assert header.version == version
        path = HERE / f"v{version}-{name}.raq"
        path.write_bytes(data)
        manifest[path.name] = {
            "version": version,
            "codebook_size": header.codebook_size,
            "sections": len(bitstream.unpack(data).refinement_sections),
            "layers": [list(layer) for layer in header.layers],
            "decoded_sha256": pixels_sha256(raqcodec.decode(data)),
        }
        print(path.name, len(data), "bytes", manifest[path.name]["sections"], "sections")
    manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")


if __name__ == "__main__":
    main()
