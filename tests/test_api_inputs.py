"""The Python API takes what a Python user has at hand (issue 18, item 13): paths, bytes and file objects on
both sides; every bad argument raises one of the documented error classes (all ValueErrors)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from conftest import smooth_image
from PIL import Image

import raqcodec


@pytest.fixture
def png(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(smooth_image(20, 28)).save(path)
    return path


def test_decode_and_inspect_accept_paths_bytes_and_file_objects(tiny_model_path: Path, tmp_path: Path) -> None:
    data = raqcodec.encode(smooth_image(20, 28), codebook_size=8, model=tiny_model_path)
    path = tmp_path / "x.raq"
    path.write_bytes(data)
    reference = np.asarray(raqcodec.decode(data, model=tiny_model_path))
    with open(path, "rb") as fh:
        for source in (path, str(path), bytearray(data), memoryview(data), io.BytesIO(data), fh):
            assert np.array_equal(np.asarray(raqcodec.decode(source, model=tiny_model_path)), reference)
    assert raqcodec.inspect(str(path), model=tiny_model_path)["codebook_size"] == 8


def test_encode_accepts_bytes_and_file_objects(tiny_model_path: Path, png: Path) -> None:
    reference = raqcodec.encode(png, codebook_size=8, model=tiny_model_path)
    raw = png.read_bytes()
    with open(png, "rb") as fh:
        for source in (
            str(png),
            raw,
            bytearray(raw),
            io.BytesIO(raw),
            fh,
            Image.open(png),
            np.asarray(Image.open(png)),
        ):
            assert raqcodec.encode(source, codebook_size=8, model=tiny_model_path) == reference, type(source)


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"codebook_size": 16.5}, "BudgetError"),
        ({"codebook_size": True}, "BudgetError"),
        ({"codebook_size": "16"}, "BudgetError"),
        ({"bpp": "0.3"}, "BudgetError"),
        ({"bpp": True}, "BudgetError"),
        ({"bpp": float("nan")}, "BudgetError"),
        ({}, "BudgetError"),
        ({"bpp": 1.0, "codebook_size": 8}, "BudgetError"),
        ({"codebook_size": 8, "device": "tpu"}, "CodecError"),
        ({"codebook_size": 8, "device": 3}, "CodecError"),
        ({"codebook_size": 8, "adapter": "nope"}, "CodecError"),
        ({"codebook_size": 8, "entropy": "nope"}, "CodecError"),
        ({"codebook_size": 8, "refine": -1}, "CodecError"),
        ({"codebook_size": 8, "refine": 2.5}, "CodecError"),
        ({"codebook_size": 8, "max_tile_pixels": 0}, "CodecError"),
        ({"codebook_size": 8, "model": "nope"}, "ModelFileError"),
    ],
)
def test_bad_encode_arguments_raise_documented_errors(
    tiny_model_path: Path, png: Path, kwargs: dict, error: str
) -> None:
    kwargs = {"model": tiny_model_path, **kwargs}
    with pytest.raises(getattr(raqcodec, error)) as caught:
        raqcodec.encode(png, **kwargs)
    assert isinstance(caught.value, ValueError) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "source,error",
    [
        (12345, "ImageError"),
        (b"not an image", "ImageError"),
        ("missing.png", "ImageError"),
    ],
)
def test_bad_images_raise_image_errors(tiny_model_path: Path, source: object, error: str) -> None:
    with pytest.raises(getattr(raqcodec, error)):
        raqcodec.encode(source, codebook_size=8, model=tiny_model_path)


def test_bad_decode_arguments_raise_documented_errors(tiny_model_path: Path, tmp_path: Path) -> None:
    data = raqcodec.encode(smooth_image(20, 28), codebook_size=8, model=tiny_model_path)
    for source in (12345, tmp_path / "missing.raq", b"junk"):
        with pytest.raises(raqcodec.FormatError):
            raqcodec.decode(source, model=tiny_model_path)
    with pytest.raises(raqcodec.CodecError):
        raqcodec.decode(data, model=tiny_model_path, device="tpu")
    with pytest.raises(raqcodec.ModelFileError):
        raqcodec.decode(data, model="nope")
