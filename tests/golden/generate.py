"""Regenerate the golden streams: ``python tests/golden/generate.py`` (from the repository root).

Writes ``v<version>-<name>.raq`` for the format version this checkout writes, encoded with the bundled
default model from small generated images, and records the SHA-256 of each file's decoded pixels in
``manifest.json``. tests/test_golden.py decodes every listed file and compares. Files of earlier versions
stay as they were written by the release that wrote them: never regenerate those.
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

import raqcodec  # noqa: E402
from raqcodec import bitstream  # noqa: E402
from conftest import smooth_image  # noqa: E402


def cases() -> dict[str, tuple[Image.Image, int]]:
    rgb = smooth_image(48, 64, seed=7)
    gray16 = Image.fromarray((smooth_image(40, 36, seed=8)[:, :, 0].astype(np.uint16) * 257))
    alpha = np.tile(np.arange(40, dtype=np.uint8) * 6, (32, 1))
    rgba = Image.fromarray(np.dstack([smooth_image(32, 40, seed=9), alpha]))
    return {"rgb-k4": (Image.fromarray(rgb), 4), "rgb-k64": (Image.fromarray(rgb), 64),
            "rgb-k1024": (Image.fromarray(rgb), 1024), "gray16-k32": (gray16, 32), "rgba-k128": (rgba, 128)}


def pixels_sha256(image: Image.Image) -> str:
    arr = np.asarray(image)
    return hashlib.sha256(f"{image.mode}|{arr.shape}|{arr.dtype.str}|".encode() + arr.tobytes()).hexdigest()


def main() -> None:
    manifest_path = HERE / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    version = bitstream.FORMAT_VERSION
    for name, (image, size) in cases().items():
        data = raqcodec.encode(image, codebook_size=size)
        path = HERE / f"v{version}-{name}.raq"
        path.write_bytes(data)
        manifest[path.name] = {"version": version, "codebook_size": size,
                               "decoded_sha256": pixels_sha256(raqcodec.decode(data))}
        print(path.name, len(data), "bytes")
    manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")


if __name__ == "__main__":
    main()
