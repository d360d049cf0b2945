"""Golden streams: committed .raq files of every format version decode to the recorded pixels.

The files were written by the release of their version with the bundled default model
(tests/golden/generate.py); decoding them here checks that the decoder, the exact integer decoder and
the entropy coders of this checkout reproduce those pixels bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from golden.generate import pixels_sha256

import raqcodec
from raqcodec.io import bitstream

GOLDEN = Path(__file__).parent / "golden"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())


def test_every_version_this_checkout_reads_has_golden_files() -> None:
    versions = {entry["version"] for entry in MANIFEST.values()}
    assert versions == set(bitstream.READ_VERSIONS)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_golden_stream_decodes_to_recorded_pixels(name: str) -> None:
    entry = MANIFEST[name]
    data = (GOLDEN / name).read_bytes()
    header = bitstream.read_header(data)
    assert header.version == entry["version"] and header.codebook_size == entry["codebook_size"]
    assert len(bitstream.unpack(data).refinement_sections) == entry.get("sections", 0)
    assert [list(layer) for layer in header.layers] == entry.get("layers", [])
    assert pixels_sha256(raqcodec.decode(data, device="cpu")) == entry["decoded_sha256"]
