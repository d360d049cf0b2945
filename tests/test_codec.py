"""The codec end to end through the Python API, on the tiny test model: round trips, fields, errors."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, make_tiny_model, smooth_image
from PIL import Image

import raqcodec
from raqcodec.io import bitstream
from raqcodec.model.registry import ModelNotFound


def _grid(h: int, w: int) -> tuple[int, int]:
    return (h + 3) // 4, (w + 3) // 4


@pytest.mark.parametrize("height,width", [(1, 1), (3, 5), (17, 33), (64, 48), (31, 4)])
def test_round_trip_odd_sizes(tiny_model_path: Path, height: int, width: int) -> None:
    img = smooth_image(height, width)
    data = raqcodec.encode(img, codebook_size=32, model=tiny_model_path)
    out = raqcodec.decode(data, model=tiny_model_path)
    assert out.size == (width, height) and out.mode == "RGB"
    info = raqcodec.inspect(data, model=tiny_model_path)
    assert info["indices"].shape == _grid(height, width)
    assert info["indices"].min() >= 0 and info["indices"].max() < 32
    assert info["codebook"].shape == (32, TINY.latent_dim)


def test_header_fields(tiny_model_path: Path) -> None:
    model = raqcodec.load_model(tiny_model_path)
    data = raqcodec.encode(smooth_image(20, 28), codebook_size=13, model=tiny_model_path)
    header = bitstream.read_header(data)
    assert header.codebook_size == 13 and header.adapter == "seq2seq"
    assert (header.width, header.height, header.mode, header.bit_depth) == (28, 20, "RGB", 8)
    assert header.model_fingerprint == bytes.fromhex(model.fingerprint)[:8]
    assert not header.has_alpha
    summary = raqcodec.header_summary(data)
    assert summary["bytes"] == len(data)
    assert summary["bpp"] == pytest.approx(len(data) * 8 / (28 * 20))


def test_grayscale_decodes_as_grayscale(tiny_model_path: Path) -> None:
    gray = Image.fromarray(smooth_image(24, 24)[:, :, 0], "L")
    out = raqcodec.decode(raqcodec.encode(gray, codebook_size=16, model=tiny_model_path), model=tiny_model_path)
    assert out.mode == "L" and out.size == (24, 24)


def test_sixteen_bit_gray_comes_back_sixteen_bit(tiny_model_path: Path) -> None:
    arr = smooth_image(16, 16)[:, :, 0].astype(np.uint16) * 257
    data = raqcodec.encode(arr, codebook_size=16, model=tiny_model_path)
    assert bitstream.read_header(data).bit_depth == 16
    out = raqcodec.decode(data, model=tiny_model_path)
    assert out.mode == "I;16"


def test_alpha_is_kept_exactly(tiny_model_path: Path) -> None:
    rgba = np.dstack([smooth_image(21, 19), np.random.default_rng(0).integers(0, 256, (21, 19), dtype=np.uint8)])
    data = raqcodec.encode(rgba, codebook_size=16, model=tiny_model_path)
    header = bitstream.read_header(data)
    assert header.has_alpha
    out = raqcodec.decode(data, model=tiny_model_path)
    assert out.mode == "RGBA"
    assert np.array_equal(np.asarray(out)[:, :, 3], rgba[:, :, 3])


def test_encoding_is_deterministic_and_decoding_repeatable(tiny_model_path: Path) -> None:
    img = smooth_image(40, 56, seed=3)
    a = raqcodec.encode(img, bpp=2.0, model=tiny_model_path)
    b = raqcodec.encode(img, bpp=2.0, model=tiny_model_path)
    assert a == b
    first = np.asarray(raqcodec.decode(a, model=tiny_model_path))
    second = np.asarray(raqcodec.decode(a, model=tiny_model_path))
    assert np.array_equal(first, second)


def test_bpp_budget_is_respected_and_monotone(tiny_model_path: Path) -> None:
    img = smooth_image(64, 64, seed=5)
    sizes, lengths = [], []
    for bpp in (1.0, 1.6, 2.5):
        data = raqcodec.encode(img, bpp=bpp, model=tiny_model_path)
        assert len(data) * 8 / (64 * 64) <= bpp
        sizes.append(bitstream.read_header(data).codebook_size)
        lengths.append(len(data))
    assert sizes == sorted(sizes) and lengths == sorted(lengths)


def test_largest_fitting_codebook_is_chosen(tiny_model_path: Path) -> None:
    """Without refinement the budget's codebook is the largest whose whole file fits: the next size up does
    not. The budgets bind (K~ below the model's largest), or the test would prove nothing."""
    img = smooth_image(64, 64, seed=7)
    for bpp in (0.3, 0.4):
        data = raqcodec.encode(img, bpp=bpp, model=tiny_model_path, refine=0)
        k = bitstream.read_header(data).codebook_size
        assert k < TINY.k_max and len(data) * 8 / (64 * 64) <= bpp
        bigger = raqcodec.encode(img, codebook_size=k + 1, model=tiny_model_path, refine=0)
        assert len(bigger) * 8 / (64 * 64) > bpp


def test_unreachable_budget_names_the_range(tiny_model_path: Path) -> None:
    with pytest.raises(raqcodec.BudgetError, match=r"can reach for this image: [0-9.]+ to [0-9.]+ bpp"):
        raqcodec.encode(smooth_image(64, 64), bpp=0.01, model=tiny_model_path)
    with pytest.raises(raqcodec.BudgetError, match="range 2..64"):
        raqcodec.encode(smooth_image(8, 8), codebook_size=65, model=tiny_model_path)


def test_corrupt_and_truncated_streams_raise_clear_errors(tiny_model_path: Path) -> None:
    data = raqcodec.encode(smooth_image(32, 32), codebook_size=20, model=tiny_model_path)
    with pytest.raises(raqcodec.FormatError, match="truncated"):
        raqcodec.decode(data[:-10], model=tiny_model_path)
    flipped = bytearray(data)
    flipped[-6] ^= 0x40  # inside the payload
    with pytest.raises(raqcodec.FormatError, match="CRC"):
        raqcodec.decode(bytes(flipped), model=tiny_model_path)
    with pytest.raises(raqcodec.FormatError, match="magic"):
        raqcodec.decode(b"PNG" + data[3:], model=tiny_model_path)


def test_stream_from_another_model_is_refused(tiny_model_path: Path, tmp_path: Path) -> None:
    other = make_tiny_model(tmp_path, "other", seed=1)
    data = raqcodec.encode(smooth_image(16, 16), codebook_size=8, model=other)
    with pytest.raises(ModelNotFound, match="not installed"):
        raqcodec.decode(data, model=tiny_model_path)
    assert raqcodec.decode(data, model=other).size == (16, 16)


def test_codebook_checksum_mismatch_is_an_error(tiny_model_path: Path) -> None:
    data = raqcodec.encode(smooth_image(16, 16), codebook_size=8, model=tiny_model_path)
    stream = bitstream.unpack(data)
    forged = bitstream.Stream(
        header=bitstream.Header(**{**stream.header.__dict__, "codebook_crc": stream.header.codebook_crc ^ 1}),
        indices_section=stream.indices_section,
        alpha_section=stream.alpha_section,
    )
    with pytest.raises(raqcodec.CodecError, match="checksum"):
        raqcodec.decode(bitstream.pack(forged), model=tiny_model_path)


@pytest.mark.parametrize("size", [8, 16, 20])  # DKM (< K), the base codebook itself, inverse DKM (> K)
def test_cluster_adapter_round_trip(tiny_model_path: Path, size: int) -> None:
    img = smooth_image(24, 24)
    data = raqcodec.encode(img, codebook_size=size, adapter="cluster", model=tiny_model_path)
    assert bitstream.read_header(data).adapter == "cluster"
    info = raqcodec.inspect(data, model=tiny_model_path)
    assert info["codebook"].shape == (size, TINY.latent_dim)
    assert raqcodec.decode(data, model=tiny_model_path).size == (24, 24)


def test_api_and_alpha_section_agree_with_format(tiny_model_path: Path) -> None:
    alpha = np.full((8, 8), 7, dtype=np.uint8)
    rgba = np.dstack([smooth_image(8, 8), alpha])
    stream = bitstream.unpack(raqcodec.encode(rgba, codebook_size=4, model=tiny_model_path))
    assert zlib.decompress(stream.alpha_section) == alpha.tobytes()


def test_unreadable_input_is_an_image_error(tiny_model_path: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "notes.png"
    bogus.write_text("not an image")
    with pytest.raises(raqcodec.ImageError):
        raqcodec.encode(bogus, bpp=1.0, model=tiny_model_path)


def test_cuda_request_without_cuda_is_a_clear_error(tiny_model_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(raqcodec.CodecError, match="no CUDA device"):
        raqcodec.encode(smooth_image(8, 8), codebook_size=8, model=tiny_model_path, device="cuda")


def test_cuda_and_cpu_decode_identical_pixels(tiny_model_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    img = smooth_image(40, 52, seed=11)
    for enc_dev in ("cpu", "cuda"):
        data = raqcodec.encode(img, codebook_size=32, model=tiny_model_path, device=enc_dev)
        cpu = np.asarray(raqcodec.decode(data, model=tiny_model_path, device="cpu"))
        gpu = np.asarray(raqcodec.decode(data, model=tiny_model_path, device="cuda"))
        assert np.array_equal(cpu, gpu)


def test_cluster_codebooks_are_cached_on_disk(tiny_model_path: Path) -> None:
    from raqcodec.model.loaded import CodecModel, cache_dir

    first = CodecModel.load(tiny_model_path).codebook("cluster", 30)  # inverse DKM (K = 16)
    files = list((cache_dir() / CodecModel.load(tiny_model_path).fingerprint[:16]).glob("cluster-30-*.npy"))
    assert len(files) == 1
    again = CodecModel.load(tiny_model_path).codebook("cluster", 30)  # a fresh instance reads the file
    assert torch.equal(first, again)


def _forged(tiny_model_path: Path, **changes: object) -> bytes:
    """A valid stream from the tiny model with header fields or sections replaced (CRC recomputed)."""
    stream = bitstream.unpack(raqcodec.encode(smooth_image(8, 8), codebook_size=8, model=tiny_model_path))
    sections = {k: changes.pop(k) for k in ("indices_section", "alpha_section") if k in changes}
    header = bitstream.Header(**{**stream.header.__dict__, **changes})
    return bitstream.pack(
        bitstream.Stream(
            header=header,
            indices_section=sections.get("indices_section", stream.indices_section),
            alpha_section=sections.get("alpha_section", stream.alpha_section),
        )
    )


def test_hostile_image_size_is_refused_before_allocation(tiny_model_path: Path) -> None:
    data = _forged(tiny_model_path, width=65535, height=65535)
    with pytest.raises(raqcodec.CodecError, match="over the limit"):
        raqcodec.decode(data, model=tiny_model_path)


def test_alpha_deflate_bomb_is_refused(tiny_model_path: Path) -> None:
    bomb = zlib.compress(bytes(50_000_000), 9)  # 50 MB of zeros for an 8x8 image
    data = _forged(tiny_model_path, has_alpha=True, alpha_section=bomb)
    with pytest.raises(raqcodec.FormatError, match="alpha section has the wrong size"):
        raqcodec.decode(data, model=tiny_model_path)


def test_non_finite_budget_is_a_budget_error(tiny_model_path: Path) -> None:
    for bad in (float("inf"), float("nan"), -1.0):
        with pytest.raises(raqcodec.BudgetError, match="positive number"):
            raqcodec.encode(smooth_image(8, 8), bpp=bad, model=tiny_model_path)


# ---------------------------------------------------------------- entropy coders (format version 2)


def test_context_coder_is_the_default_when_the_model_has_one(tiny_model_path: Path) -> None:
    model = raqcodec.load_model(tiny_model_path)
    img = smooth_image(40, 56)
    data = raqcodec.encode(img, codebook_size=24, model=tiny_model_path)
    header = bitstream.read_header(data)
    assert header.version == 2 and header.coder == "context"
    assert model.context is not None and header.context_checksum == model.context.checksum
    plain = raqcodec.encode(img, codebook_size=24, model=tiny_model_path, entropy="order0")
    plain_header = bitstream.read_header(plain)
    assert plain_header.coder == "order0" and plain_header.context_checksum == 0
    # both coders carry the same index grid, and decode to the same pixels
    a, b = raqcodec.inspect(data, model=tiny_model_path), raqcodec.inspect(plain, model=tiny_model_path)
    assert np.array_equal(a["indices"], b["indices"])
    assert np.array_equal(
        np.asarray(raqcodec.decode(data, model=tiny_model_path)),
        np.asarray(raqcodec.decode(plain, model=tiny_model_path)),
    )


def test_inspect_reports_payload_and_order0_entropy(tiny_model_path: Path) -> None:
    data = raqcodec.encode(smooth_image(32, 48), codebook_size=16, model=tiny_model_path)
    info = raqcodec.inspect(data, model=tiny_model_path)
    stream = bitstream.unpack(data)
    assert info["payload_bits"] == 8 * len(stream.indices_section)
    counts = np.bincount(info["indices"].ravel()).astype(float)
    p = counts[counts > 0] / counts.sum()
    assert info["order0_entropy_bits"] == pytest.approx(-(p * np.log2(p)).sum() * info["indices"].size)


def test_model_without_context_codes_order0(tmp_path: Path) -> None:
    plain = make_tiny_model(tmp_path, "plain", with_context=False)
    data = raqcodec.encode(smooth_image(16, 16), codebook_size=8, model=plain)
    assert bitstream.read_header(data).coder == "order0"
    with pytest.raises(raqcodec.CodecError, match="has no context model"):
        raqcodec.encode(smooth_image(16, 16), codebook_size=8, model=plain, entropy="context")
    with pytest.raises(ValueError, match="entropy must be one of"):
        raqcodec.encode(smooth_image(16, 16), codebook_size=8, model=plain, entropy="huffman")


def test_context_model_mismatch_is_a_clear_error(tiny_model_path: Path, tmp_path: Path) -> None:
    """Same codec model (same fingerprint), different context model: refused by its checksum."""
    data = raqcodec.encode(smooth_image(16, 16), codebook_size=8, model=tiny_model_path)
    retrained = make_tiny_model(tmp_path, "tiny", context_seed=5)
    assert raqcodec.load_model(retrained).fingerprint == raqcodec.load_model(tiny_model_path).fingerprint
    with pytest.raises(raqcodec.CodecError, match="context model checksum mismatch"):
        raqcodec.decode(data, model=retrained)
    (tmp_path / "none").mkdir()
    without = make_tiny_model(tmp_path / "none", "tiny", with_context=False)
    with pytest.raises(raqcodec.CodecError, match="has none"):
        raqcodec.decode(data, model=without)
    # order-0 streams of the same model decode with or without a context model
    plain = raqcodec.encode(smooth_image(16, 16), codebook_size=8, model=tiny_model_path, entropy="order0")
    assert raqcodec.decode(plain, model=without).size == (16, 16)


def test_bpp_budget_holds_with_the_context_coder(tiny_model_path: Path) -> None:
    img = smooth_image(64, 96)
    for bpp in (0.5, 1.0, 2.0):
        data = raqcodec.encode(img, bpp=bpp, model=tiny_model_path)
        assert len(data) * 8 / (64 * 96) <= bpp
        assert bitstream.read_header(data).coder == "context"


def test_a_device_never_moves_the_shared_model(tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """encode/decode on a device run on a twin of the registry's cached model: the cached one, shared by
    every caller in the process, stays on its device (decode used to move it with ``model.to(device)``).
    The "meta" device stands in for a GPU: every torch build has it, and computing on it fails."""
    from raqcodec import codec
    from raqcodec.model import registry

    shared = registry.load(tiny_model_path)
    image = smooth_image(32, 32, seed=3)
    data = raqcodec.encode(image, codebook_size=16, model=tiny_model_path, refine=0)
    expected = np.asarray(raqcodec.decode(data, model=tiny_model_path))
    meta = torch.device("meta")
    twin = shared.on(meta)
    assert twin is not shared and shared.on(meta) is twin and twin.on("cpu") is shared
    assert next(twin.encoder.parameters()).device == meta and twin.decoder.stem.taps.device == meta
    monkeypatch.setattr(codec, "pick_device", lambda device="auto": meta)
    with pytest.raises(Exception):  # noqa: B017 - whatever the meta device raises
        raqcodec.decode(data, model=tiny_model_path, device="cpu")
    with pytest.raises(Exception):  # noqa: B017
        raqcodec.encode(image, codebook_size=16, model=tiny_model_path, refine=0, device="cpu")
    monkeypatch.undo()
    assert shared.device == torch.device("cpu") and registry.load(tiny_model_path) is shared
    assert {p.device.type for m in (shared.encoder, shared.float_decoder) for p in m.parameters()} == {"cpu"}
    assert shared.decoder.stem.taps.device.type == "cpu"
    np.testing.assert_array_equal(np.asarray(raqcodec.decode(data, model=tiny_model_path)), expected)
