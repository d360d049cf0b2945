"""The tables the command line reads before any heavy import agree with what they describe: the readable
extensions with Pillow, a model's coding range from its header with the loaded model."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from raqcodec.io import formats
from raqcodec.model import loaded as model
from raqcodec.model import registry


def test_every_readable_extension_is_one_pillow_opens() -> None:
    Image.init()
    registered = Image.registered_extensions()
    assert all(ext in registered for ext in formats.READABLE_EXTENSIONS), sorted(
        formats.READABLE_EXTENSIONS - set(registered)
    )
    assert formats.RAQ_EXTENSION not in formats.READABLE_EXTENSIONS


def test_output_formats_by_extension() -> None:
    assert formats.output_format("a.JPG").name == "JPEG" and formats.output_format("x/y.tiff").name == "TIFF"
    for bad in ("a.gif", "a", "a.raq"):
        try:
            formats.output_format(bad)
        except ValueError as exc:
            assert ".png" in str(exc) and bad in str(exc)
        else:
            raise AssertionError(bad)


def test_model_ranges_read_from_headers_match_the_loaded_models(tiny_model_path: Path) -> None:
    assert registry.MIN_CODEBOOK_SIZE == model.MIN_CODEBOOK_SIZE
    for ref in (None, tiny_model_path):
        assert registry.coding_range(ref) == registry.load(ref).size_range
