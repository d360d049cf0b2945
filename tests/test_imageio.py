"""Tests for raqcodec.io.images and raqcodec.io.writing: every input property gets a deliberate behaviour."""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps, PngImagePlugin

from raqcodec.eval.metrics import mse, psnr
from raqcodec.io import png16
from raqcodec.io.images import ImageError, SourceImage, crop, load_image, pad_to_multiple, to_pil
from raqcodec.io.writing import save_png

RNG_SEED = 1234


def _rng() -> np.random.Generator:
    return np.random.default_rng(RNG_SEED)


def _round16(values: np.ndarray) -> np.ndarray:
    """Reference 16 -> 8 bit rounding, in floats, to cross-check the integer form."""
    return np.floor(values.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)


def _save(img: Image.Image, path: Path, **kwargs: object) -> Path:
    img.save(path, **kwargs)
    return path


# --------------------------------------------------------------------------
# A hand-made PNG writer: Pillow cannot write 16-bit RGB / RGBA / GA PNGs.
# --------------------------------------------------------------------------


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _filter_row(kind: int, row: bytes, prev: bytes, bpp: int) -> bytes:
    """PNG filter `kind` applied to one scanline (prev is the unfiltered row above)."""
    out = bytearray()
    for i, x in enumerate(row):
        a = row[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        pred = [0, a, b, (a + b) // 2, _paeth(a, b, c)][kind]
        out.append((x - pred) % 256)
    return bytes([kind]) + bytes(out)


# Adam7 passes: (x start, y start, x step, y step).
_ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def _filtered_rows(samples: np.ndarray) -> bytes:
    """Scanlines of one (sub)image, cycling through all five PNG row filters."""
    bpp = 2 * samples.shape[2]
    prev = bytes(samples.shape[1] * bpp)
    out = []
    for y in range(samples.shape[0]):
        row = samples[y].astype(">u2").tobytes()
        out.append(_filter_row(y % 5, row, prev, bpp))
        prev = row
    return b"".join(out)


def _png_bytes(samples: np.ndarray, colour_type: int, trns: bytes | None = None, interlace: bool = False) -> bytes:
    """A 16-bit PNG of (H, W, C) samples, optionally Adam7-interlaced."""
    height, width, _ = samples.shape
    if interlace:
        passes = [samples[y0::dy, x0::dx] for x0, y0, dx, dy in _ADAM7]
        data = b"".join(_filtered_rows(p) for p in passes if p.size)
    else:
        data = _filtered_rows(samples)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, int(interlace))
    body = chunk(b"IHDR", ihdr)
    if trns is not None:
        body += chunk(b"tRNS", trns)
    body += chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def _samples16(shape: tuple[int, ...]) -> np.ndarray:
    values = _rng().integers(0, 65536, size=shape, dtype=np.int64).astype(np.uint16)
    # Include values where truncation (v >> 8) and rounding disagree.
    values.flat[:4] = [1000, 65535, 0, 32768]
    return values


# --------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------


def test_rgb_png_round_trips_exactly(tmp_path: Path) -> None:
    pixels = _rng().integers(0, 256, (5, 7, 3), dtype=np.uint8)
    src = load_image(_save(Image.fromarray(pixels), tmp_path / "a.png"))
    assert isinstance(src, SourceImage)
    assert (src.mode, src.bit_depth, src.alpha, src.notes) == ("RGB", 8, None, [])
    assert (src.height, src.width) == (5, 7)
    assert src.rgb.dtype == np.uint8 and src.rgb.flags.c_contiguous
    np.testing.assert_array_equal(src.rgb, pixels)


def test_gray_png_is_replicated_to_three_channels(tmp_path: Path) -> None:
    gray = _rng().integers(0, 256, (4, 6), dtype=np.uint8)
    src = load_image(_save(Image.fromarray(gray), tmp_path / "g.png"))
    assert (src.mode, src.bit_depth, src.alpha, src.notes) == ("L", 8, None, [])
    assert src.rgb.shape == (4, 6, 3)
    for channel in range(3):
        np.testing.assert_array_equal(src.rgb[..., channel], gray)


def test_one_bit_image_becomes_gray_0_or_255(tmp_path: Path) -> None:
    bits = np.array([[0, 255, 0], [255, 255, 0]], dtype=np.uint8)
    path = _save(Image.fromarray(bits).convert("1"), tmp_path / "b.png")
    src = load_image(path)
    assert (src.mode, src.bit_depth, src.alpha) == ("L", 8, None)
    np.testing.assert_array_equal(src.rgb[..., 0], bits)
    assert any("1-bit" in note for note in src.notes)


def _palette_image() -> Image.Image:
    img = Image.new("P", (3, 2))
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2, 2, 1, 0])
    return img


def test_palette_without_transparency_is_rgb(tmp_path: Path) -> None:
    src = load_image(_save(_palette_image(), tmp_path / "p.png"))
    assert (src.mode, src.bit_depth, src.alpha) == ("RGB", 8, None)
    np.testing.assert_array_equal(src.rgb[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(src.rgb[0, 1], [0, 255, 0])
    np.testing.assert_array_equal(src.rgb[1, 0], [0, 0, 255])
    assert any("palette" in note for note in src.notes)
    assert not any("opaque" in note for note in src.notes)


def test_palette_with_transparent_index_gets_alpha(tmp_path: Path) -> None:
    path = _save(_palette_image(), tmp_path / "pt.png", transparency=1)
    src = load_image(path)
    assert src.mode == "RGB"
    assert src.alpha is not None
    np.testing.assert_array_equal(src.alpha, [[255, 0, 255], [255, 0, 255]])


def test_la_keeps_alpha(tmp_path: Path) -> None:
    planes = np.stack([np.full((2, 3), 77, np.uint8), np.array([[0, 128, 255]] * 2, np.uint8)], -1)
    src = load_image(_save(Image.fromarray(planes), tmp_path / "la.png"))
    assert (src.mode, src.bit_depth) == ("L", 8)
    assert np.all(src.rgb == 77)
    np.testing.assert_array_equal(src.alpha, planes[..., 1])


def test_rgba_with_real_transparency_keeps_alpha(tmp_path: Path) -> None:
    rgba = _rng().integers(0, 256, (3, 4, 4), dtype=np.uint8)
    src = load_image(_save(Image.fromarray(rgba), tmp_path / "rgba.png"))
    assert (src.mode, src.bit_depth, src.notes) == ("RGB", 8, [])
    np.testing.assert_array_equal(src.rgb, rgba[..., :3])
    np.testing.assert_array_equal(src.alpha, rgba[..., 3])


def test_fully_opaque_rgba_drops_alpha_with_note(tmp_path: Path) -> None:
    rgba = _rng().integers(0, 256, (3, 4, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    src = load_image(_save(Image.fromarray(rgba), tmp_path / "opaque.png"))
    assert src.alpha is None and src.mode == "RGB"
    assert src.notes == ["alpha channel is fully opaque: dropped (nothing lost)"]


def test_rgb_colour_key_becomes_alpha(tmp_path: Path) -> None:
    pixels = np.zeros((2, 2, 3), np.uint8)
    pixels[0, 0] = [10, 20, 30]
    path = _save(Image.fromarray(pixels), tmp_path / "key.png", transparency=(10, 20, 30))
    src = load_image(path)
    np.testing.assert_array_equal(src.alpha, [[0, 255], [255, 255]])
    assert any("colour key" in note for note in src.notes)


def test_16bit_gray_png_rounds_to_8_bits(tmp_path: Path) -> None:
    values = np.array([[0, 128, 129, 1000], [32768, 65280, 65534, 65535]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "g16.png")
    assert Image.open(path).mode == "I;16"  # what Pillow 13 gives for 16-bit gray
    src = load_image(path)
    assert (src.mode, src.bit_depth, src.alpha) == ("L", 16, None)
    expected = np.array([[0, 0, 1, 4], [128, 254, 255, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(src.rgb[..., 0], expected)
    np.testing.assert_array_equal(expected, _round16(values))
    assert src.notes == ["16-bit samples reduced to 8 bits before coding; the decoded PNG is written at 16 bits"]


def test_pillow_truncates_16bit_rgb_png(tmp_path: Path) -> None:
    """Documents Pillow 13: 16-bit RGB opens as 8-bit "RGB" holding the high bytes."""
    samples = _samples16((3, 5, 3))
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png_bytes(samples, colour_type=2))
    assert path.read_bytes()[24] == 16
    with Image.open(path) as img:
        assert img.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(img), samples >> 8)


def test_16bit_rgb_png_is_recovered_and_rounded(tmp_path: Path) -> None:
    samples = _samples16((6, 5, 3))
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png_bytes(samples, colour_type=2))
    src = load_image(path)
    assert (src.mode, src.bit_depth, src.alpha) == ("RGB", 16, None)
    np.testing.assert_array_equal(src.rgb, _round16(samples))
    assert src.rgb[0, 0, 0] == 4  # 1000: rounded, not truncated to 3
    assert src.notes == [
        "16-bit samples reduced to 8 bits before coding; the decoded PNG is written at 8 bits "
        "(Pillow cannot write 16-bit RGB or gray+alpha PNGs)"
    ]


def test_interlaced_16bit_rgb_png_is_recovered(tmp_path: Path) -> None:
    samples = _samples16((11, 10, 3))
    path = tmp_path / "adam7.png"
    path.write_bytes(_png_bytes(samples, colour_type=2, interlace=True))
    with Image.open(path) as img:
        assert img.info.get("interlace") == 1
    src = load_image(path)
    np.testing.assert_array_equal(src.rgb, _round16(samples))
    assert not any("truncated" in note for note in src.notes)


def test_16bit_rgba_png_is_recovered(tmp_path: Path) -> None:
    samples = _samples16((6, 4, 4))
    path = tmp_path / "rgba16.png"
    path.write_bytes(_png_bytes(samples, colour_type=6))
    src = load_image(path)
    assert (src.mode, src.bit_depth) == ("RGB", 16)
    np.testing.assert_array_equal(src.rgb, _round16(samples[..., :3]))
    np.testing.assert_array_equal(src.alpha, _round16(samples[..., 3]))


def test_16bit_gray_alpha_png_is_gray_with_alpha(tmp_path: Path) -> None:
    samples = _samples16((6, 4, 2))
    path = tmp_path / "ga16.png"
    path.write_bytes(_png_bytes(samples, colour_type=4))
    assert Image.open(path).mode == "RGBA"  # Pillow 13 widens gray+alpha to RGBA
    src = load_image(path)
    assert (src.mode, src.bit_depth) == ("L", 16)
    for channel in range(3):
        np.testing.assert_array_equal(src.rgb[..., channel], _round16(samples[..., 0]))
    np.testing.assert_array_equal(src.alpha, _round16(samples[..., 1]))


def test_16bit_rgb_colour_key_compares_all_16_bits(tmp_path: Path) -> None:
    samples = np.zeros((2, 2, 3), np.uint16)
    samples[0, 0] = [1000, 2000, 3000]
    samples[0, 1] = [1001, 2000, 3000]  # same high bytes, different low byte
    path = tmp_path / "key16.png"
    path.write_bytes(_png_bytes(samples, 2, trns=struct.pack(">HHH", 1000, 2000, 3000)))
    src = load_image(path)
    np.testing.assert_array_equal(src.alpha, [[0, 255], [255, 255]])


def test_16bit_rgb_fallback_when_recovery_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(png16, "_png16_samples", lambda *args: None)
    samples = _samples16((3, 4, 3))
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png_bytes(samples, colour_type=2))
    src = load_image(path)
    assert src.bit_depth == 16
    np.testing.assert_array_equal(src.rgb, (samples >> 8).astype(np.uint8))
    assert any("truncated, not rounded" in note for note in src.notes)


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_is_converted_to_rgb_with_note(tmp_path: Path, fmt: str) -> None:
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    path = _save(cmyk, tmp_path / f"c.{fmt.lower()}", format=fmt)
    src = load_image(path)
    assert (src.mode, src.bit_depth, src.alpha) == ("RGB", 8, None)
    assert np.abs(src.rgb.astype(int) - [255, 0, 0]).max() <= 8
    assert any(note.startswith("CMYK converted to RGB") for note in src.notes)


# --------------------------------------------------------------------------
# Pillow image inputs with modes files rarely carry
# --------------------------------------------------------------------------


def test_pil_image_premultiplied_rgba_is_unpremultiplied() -> None:
    src = load_image(Image.new("RGBa", (2, 2), (50, 25, 0, 128)))
    assert src.mode == "RGB"
    np.testing.assert_array_equal(src.rgb[0, 0], [99, 49, 0])
    assert src.alpha is not None and np.all(src.alpha == 128)
    assert any("premultiplied" in note for note in src.notes)


def test_pil_image_premultiplied_la() -> None:
    src = load_image(Image.new("La", (2, 2), (100, 128)))
    assert src.mode == "L" and np.all(src.rgb == 199) and np.all(src.alpha == 128)


def test_pil_float_image_is_rounded_and_clipped() -> None:
    img = Image.fromarray(np.array([[-5.0, 0.4, 100.6, 300.0]], dtype=np.float32))
    assert img.mode == "F"
    src = load_image(img)
    assert (src.mode, src.bit_depth) == ("L", 8)
    np.testing.assert_array_equal(src.rgb[0, :, 0], [0, 0, 101, 255])
    assert any("float" in note for note in src.notes)


def test_pil_int32_image_is_16_bit_gray_clipped() -> None:
    img = Image.fromarray(np.array([[-1, 257, 70000]], dtype=np.int32))
    assert img.mode == "I"
    src = load_image(img)
    assert (src.mode, src.bit_depth) == ("L", 16)
    np.testing.assert_array_equal(src.rgb[0, :, 0], [0, 1, 255])
    assert any("clipped to 0..65535" in note for note in src.notes)


@pytest.mark.parametrize("mode", ["YCbCr", "HSV", "LAB"])
def test_other_colour_spaces_convert_to_rgb(mode: str) -> None:
    img = Image.new("RGB", (2, 2), (200, 30, 60)).convert(mode)
    src = load_image(img)
    assert src.mode == "RGB"
    np.testing.assert_array_equal(src.rgb, np.asarray(img.convert("RGB")))
    assert f"{mode} converted to RGB" in src.notes


def test_pil_rgbx_is_rgb() -> None:
    src = load_image(Image.new("RGBX", (2, 1), (1, 2, 3, 0)))
    assert (src.mode, src.alpha, src.notes) == ("RGB", None, [])
    np.testing.assert_array_equal(src.rgb[0, 0], [1, 2, 3])


def test_zero_size_pil_image_is_refused() -> None:
    with pytest.raises(ImageError, match="empty"):
        load_image(Image.new("RGB", (0, 5)))


# --------------------------------------------------------------------------
# Orientation, metadata, frames
# --------------------------------------------------------------------------


def test_exif_orientation_6_is_applied_to_jpeg(tmp_path: Path) -> None:
    pixels = np.zeros((16, 32, 3), np.uint8)
    pixels[:, :16] = [255, 0, 0]  # left half red
    pixels[:, 16:] = [0, 0, 255]  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(Image.fromarray(pixels), tmp_path / "o.jpg", exif=exif, quality=95)
    src = load_image(path)
    assert (src.height, src.width) == (32, 16)  # rotated 90 degrees clockwise
    top, bottom = src.rgb[:12].mean(axis=(0, 1)), src.rgb[20:].mean(axis=(0, 1))
    assert top[0] > 200 and top[2] < 50  # the left edge (red) is now on top
    assert bottom[2] > 200 and bottom[0] < 50
    assert "EXIF orientation 6 applied: pixels are coded upright" in src.notes
    assert not any(note.startswith("metadata") for note in src.notes)  # only orientation


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientations_match_pillow_exif_transpose(tmp_path: Path, orientation: int) -> None:
    pixels = _rng().integers(0, 256, (3, 5, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _save(Image.fromarray(pixels), tmp_path / "o.png", exif=exif)
    src = load_image(path)
    with Image.open(path) as img:
        expected = np.asarray(ImageOps.exif_transpose(img))
    np.testing.assert_array_equal(src.rgb, expected)
    assert any("orientation" in note for note in src.notes) == (orientation != 1)


def test_16bit_png_orientation_is_applied(tmp_path: Path) -> None:
    values = np.arange(6, dtype=np.uint16).reshape(2, 3) * 10000
    exif = Image.Exif()
    exif[0x0112] = 8
    path = _save(Image.fromarray(values), tmp_path / "o16.png", exif=exif)
    src = load_image(path)
    np.testing.assert_array_equal(src.rgb[..., 0], np.rot90(_round16(values)))


def test_icc_and_text_metadata_are_noted(tmp_path: Path) -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "hello")
    path = _save(Image.new("RGB", (2, 2)), tmp_path / "m.png", icc_profile=icc, pnginfo=text)
    src = load_image(path)
    assert src.notes == ["metadata not stored: ICC profile, PNG text chunks"]


def test_exif_beyond_orientation_is_noted(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"  # Make
    path = _save(Image.new("RGB", (4, 4)), tmp_path / "e.jpg", exif=exif)
    src = load_image(path)
    assert src.notes == ["metadata not stored: EXIF"]


def test_animated_gif_codes_first_frame_with_note(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (4, 4), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    src = load_image(path)
    np.testing.assert_array_equal(src.rgb[0, 0], [255, 0, 0])
    assert f"{path} has 2 frames; only the first is coded" in src.notes


# --------------------------------------------------------------------------
# Unreadable inputs
# --------------------------------------------------------------------------


def test_truncated_png_is_an_image_error(tmp_path: Path) -> None:
    pixels = _rng().integers(0, 256, (64, 64, 3), dtype=np.uint8)
    good = _save(Image.fromarray(pixels), tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageError, match="damaged or truncated"):
        load_image(bad)


def test_lazily_opened_truncated_pil_image_is_an_image_error(tmp_path: Path) -> None:
    pixels = _rng().integers(0, 256, (64, 64, 3), dtype=np.uint8)
    good = _save(Image.fromarray(pixels), tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with Image.open(bad) as img, pytest.raises(ImageError, match="bad.png is damaged or truncated"):
        load_image(img)


def test_text_file_is_an_image_error(tmp_path: Path) -> None:
    path = tmp_path / "photo.txt"
    path.write_text("not an image\n")
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert str(info.value) == f"{path} is not an image Pillow can read"


def test_missing_file_and_directory_are_image_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


def test_decompression_bomb_error_is_an_image_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(Image.new("RGB", (20, 20)), tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageError) as info:
        load_image(path)  # 400 > 2 * 100: Pillow raises
    assert str(info.value) == (
        f"{path} has 400 pixels, over Pillow's decompression-bomb limit of 100; refusing to decode it"
    )


def test_decompression_bomb_warning_is_an_image_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(Image.new("RGB", (12, 12)), tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageError, match="144 pixels, over Pillow's decompression-bomb limit of 100"):
        load_image(path)  # 100 < 144 <= 200: Pillow only warns


# --------------------------------------------------------------------------
# Array inputs
# --------------------------------------------------------------------------


def test_array_inputs() -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    src = load_image(gray)
    assert (src.mode, src.bit_depth, src.alpha) == ("L", 8, None)
    np.testing.assert_array_equal(src.rgb[..., 2], gray)

    rgb = _rng().integers(0, 256, (3, 4, 3), dtype=np.uint8)
    src = load_image(rgb)
    assert src.mode == "RGB" and not np.shares_memory(src.rgb, rgb)
    np.testing.assert_array_equal(src.rgb, rgb)

    rgba = np.concatenate([rgb, np.full((3, 4, 1), 7, np.uint8)], axis=-1)
    src = load_image(rgba)
    assert src.alpha is not None and np.all(src.alpha == 7)

    wide = np.full((2, 2, 3), 1000, np.uint16)
    src = load_image(wide)
    assert src.bit_depth == 16 and np.all(src.rgb == 4)


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((2, 2), np.float32),
        np.zeros((2, 2, 3), np.int16),
        np.zeros((2, 2, 2), np.uint8),
        np.zeros((2,), np.uint8),
        np.zeros((0, 3, 3), np.uint8),
    ],
)
def test_bad_arrays_are_image_errors(array: np.ndarray) -> None:
    with pytest.raises(ImageError):
        load_image(array)


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def test_to_pil_gray_takes_channel_0_or_rounded_mean() -> None:
    same = np.repeat(np.array([[0, 100, 255]], np.uint8)[..., None], 3, axis=2)
    img = to_pil(same, "L", None, 8)
    assert img.mode == "L"
    np.testing.assert_array_equal(np.asarray(img), [[0, 100, 255]])

    mixed = np.array([[[1, 2, 2], [10, 20, 31], [255, 255, 254]]], np.uint8)
    np.testing.assert_array_equal(np.asarray(to_pil(mixed, "L", None, 8)), [[2, 20, 255]])


def test_to_pil_modes_with_alpha_and_16_bits() -> None:
    rgb = _rng().integers(0, 256, (2, 3, 3), dtype=np.uint8)
    alpha = np.array([[0, 128, 255]] * 2, np.uint8)
    gray = np.repeat(rgb[..., :1], 3, axis=2)

    img = to_pil(rgb, "RGB", None, 8)
    assert img.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(img), rgb)

    img = to_pil(rgb, "RGB", alpha, 8)
    assert img.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(img)[..., 3], alpha)

    img = to_pil(gray, "L", alpha, 8)
    assert img.mode == "LA"
    np.testing.assert_array_equal(np.asarray(img), np.stack([gray[..., 0], alpha], -1))

    img = to_pil(gray, "L", None, 16)
    assert img.mode == "I;16"
    np.testing.assert_array_equal(np.asarray(img), gray[..., 0].astype(np.uint16) * 257)

    assert to_pil(rgb, "RGB", None, 16).mode == "RGB"  # no 16-bit RGB in Pillow
    assert to_pil(gray, "L", alpha, 16).mode == "LA"

    with pytest.raises(ValueError):
        to_pil(rgb, "CMYK", None, 8)


def test_16bit_gray_round_trips_through_save_and_load(tmp_path: Path) -> None:
    values = np.array([[0, 1000, 40000, 65535]], dtype=np.uint16)
    src = load_image(values)
    path = tmp_path / "out.png"
    save_png(to_pil(src.rgb, src.mode, src.alpha, src.bit_depth), path)
    again = load_image(path)
    assert (again.mode, again.bit_depth) == ("L", 16)
    np.testing.assert_array_equal(again.rgb, src.rgb)


def test_save_png_writes_atomically(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    path.write_bytes(b"old")
    save_png(Image.new("RGB", (3, 2), (1, 2, 3)), path)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (3, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_save_png_failure_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.png"
    path.write_bytes(b"old")
    seen: list[str] = []

    def boom(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        seen.extend(p.name for p in tmp_path.iterdir())
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_png(Image.new("RGB", (2, 2)), path)
    temp_names = [name for name in seen if name != "out.png"]
    assert len(temp_names) == 1 and temp_names[0].startswith(".") and temp_names[0].endswith(".tmp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    assert path.read_bytes() == b"old"


# --------------------------------------------------------------------------
# Padding, cropping, PSNR
# --------------------------------------------------------------------------


def test_pad_to_multiple_replicates_edges_and_crop_undoes_it() -> None:
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    padded = pad_to_multiple(rgb, 4)
    assert padded.shape == (4, 4, 3)
    np.testing.assert_array_equal(padded[:2, :3], rgb)
    np.testing.assert_array_equal(padded[3, :3], rgb[1])  # bottom rows copy the last row
    np.testing.assert_array_equal(padded[:2, 3], rgb[:, 2])  # right column copies the last one
    np.testing.assert_array_equal(padded[3, 3], rgb[1, 2])
    np.testing.assert_array_equal(crop(padded, 2, 3), rgb)
    assert pad_to_multiple(padded, 2) is padded
    with pytest.raises(ValueError):
        pad_to_multiple(rgb, 0)
    with pytest.raises(ValueError):
        crop(rgb, 3, 3)


def test_psnr_known_values() -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    assert psnr(mse(a, a)) == math.inf
    b = np.ones((4, 4, 3), np.uint8)
    assert psnr(mse(a, b)) == pytest.approx(20 * math.log10(255), abs=1e-9)  # 48.1308 dB
    c = a.copy()
    c[0, 0, 0] = 255  # mse = 255**2 / 48
    assert psnr(mse(a, c)) == pytest.approx(10 * math.log10(48), abs=1e-9)
    assert psnr(mse(np.full_like(a, 255), a)) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        mse(a, a[:2])


def test_stated_resolution_is_noted_but_not_pillows_default(tmp_path: Path) -> None:
    png = _save(Image.new("RGB", (2, 2)), tmp_path / "r.png", dpi=(300, 300))
    assert load_image(png).notes == ["metadata not stored: resolution (DPI)"]
    jpeg = _save(Image.new("RGB", (2, 2)), tmp_path / "r.jpg", dpi=(300, 300))
    assert load_image(jpeg).notes == ["metadata not stored: resolution (DPI)"]
    plain = _save(Image.new("RGB", (2, 2)), tmp_path / "plain.jpg")
    assert load_image(plain).notes == []
