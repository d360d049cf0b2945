"""Tests for raqcodec.io.bitstream: the .raq container layout and every rejection path."""

from __future__ import annotations

import dataclasses
import json
import struct
import zlib

import pytest

from raqcodec.io import bitstream as B
from raqcodec.io.bitstream import FormatError, Header, Layer, Stream, pack, read_header, unpack

FINGERPRINT = bytes.fromhex("0123456789abcdef")


def make_header(**changes: object) -> Header:
    fields = dict(
        version=2,
        model_fingerprint=FINGERPRINT,
        adapter="cluster",
        codebook_size=1000,
        codebook_crc=0xDEADBEEF,
        width=641,
        height=479,
        mode="RGB",
        bit_depth=16,
        has_alpha=True,
        coder="context",
        context_checksum=0xCAFEF00D,
    )
    fields.update(changes)
    return Header(**fields)  # type: ignore[arg-type]


def make_stream(alpha: bytes = b"\x78\x9c-alpha", **changes: object) -> Stream:
    changes.setdefault("has_alpha", bool(alpha))
    return Stream(header=make_header(**changes), indices_section=b"\x0b" + bytes(range(40)), alpha_section=alpha)


def with_crc(body: bytes) -> bytes:
    return body + struct.pack(">I", zlib.crc32(body))


def patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    """Overwrite one header field and recompute the CRC, so the field check is what fails."""
    body = bytearray(data[:-4])
    struct.pack_into(fmt, body, offset, value)
    return with_crc(bytes(body))


# ---------------------------------------------------------------- layout and round trip


def test_constants() -> None:
    assert B.MAGIC == b"\x89RAQ"
    assert B.FORMAT_VERSION == 2
    assert B.REFINED_VERSION == 3
    assert B.READ_VERSIONS == (1, 2, 3)
    assert B.HEADER_SIZE == 40
    assert B.header_size(1) == 35 and B.header_size(2) == 40
    assert B.header_size(3) == 41 and B.header_size(3, (Layer(4, 5),)) == 63
    assert B.CODERS == ("order0", "context")
    assert B.ADAPTERS == ("seq2seq", "cluster")
    assert B.MODES == ("L", "RGB")


@pytest.mark.parametrize("alpha", [b"", b"\x78\x9c-alpha"])
def test_roundtrip(alpha: bytes) -> None:
    stream = make_stream(alpha)
    data = pack(stream)
    assert len(data) == 40 + len(stream.indices_section) + len(alpha) + 4
    assert unpack(data) == stream
    assert read_header(data) == stream.header


def test_byte_layout() -> None:
    stream = make_stream()
    data = pack(stream)
    assert data[0:4] == b"\x89RAQ"
    assert data[4] == 2
    assert data[5] == 0x01  # alpha flag
    assert data[6:14] == FINGERPRINT
    assert data[14] == 1  # cluster
    assert data[15:17] == (1000).to_bytes(2, "big")
    assert data[17:21] == bytes.fromhex("deadbeef")
    assert data[21:23] == (641).to_bytes(2, "big")
    assert data[23:25] == (479).to_bytes(2, "big")
    assert data[25] == 1  # RGB
    assert data[26] == 16
    assert data[27:31] == (41).to_bytes(4, "big")
    assert data[31:35] == (len(stream.alpha_section)).to_bytes(4, "big")
    assert data[35] == 1  # context coder
    assert data[36:40] == bytes.fromhex("cafef00d")
    assert data[40:81] == stream.indices_section
    assert data[81:-4] == stream.alpha_section
    assert data[-4:] == zlib.crc32(data[:-4]).to_bytes(4, "big")


def test_extreme_values_roundtrip() -> None:
    stream = make_stream(
        b"", adapter="seq2seq", codebook_size=65535, codebook_crc=0, width=65535, height=1, mode="L", bit_depth=8
    )
    data = pack(stream)
    assert data[5] == 0 and data[14] == 0 and data[25] == 0
    assert unpack(data) == stream
    small = make_stream(b"", codebook_size=2, width=1, height=65535, codebook_crc=0xFFFFFFFF)
    assert unpack(pack(small)) == small


def test_header_to_dict() -> None:
    d = make_header().to_dict()
    assert d == {
        "version": 2,
        "model_fingerprint": "0123456789abcdef",
        "adapter": "cluster",
        "codebook_size": 1000,
        "codebook_crc": "deadbeef",
        "width": 641,
        "height": 479,
        "mode": "RGB",
        "bit_depth": 16,
        "has_alpha": True,
        "coder": "context",
        "context_checksum": "cafef00d",
    }
    assert json.loads(json.dumps(d)) == d


def test_accepts_bytearray_and_memoryview() -> None:
    data = pack(make_stream())
    assert unpack(bytearray(data)) == unpack(memoryview(data)) == unpack(data)


# ---------------------------------------------------------------- envelope errors


def test_too_short() -> None:
    for n in (0, 4, 38):
        with pytest.raises(FormatError, match=f"truncated .raq file: expected at least 39 bytes, got {n}"):
            unpack(pack(make_stream())[:n])
    for n in (39, 43):  # enough for version 1, not for version 2's longer header
        with pytest.raises(FormatError, match=f"truncated .raq file: expected at least 44 bytes, got {n}"):
            unpack(pack(make_stream())[:n])


def test_bad_magic() -> None:
    data = pack(make_stream())
    with pytest.raises(FormatError, match=r"not a \.raq file \(bad magic\)"):
        unpack(b"\x89PNG" + data[4:])
    with pytest.raises(FormatError, match="bad magic"):
        read_header(b"RIFF" + bytes(100))


def test_unsupported_version() -> None:
    data = patched(pack(make_stream()), 4, ">B", 7)
    with pytest.raises(
        FormatError, match=r"unsupported \.raq format version 7 \(this raqcodec reads versions 1, 2, 3\)"
    ):
        unpack(data)
    with pytest.raises(FormatError, match="version 0"):
        read_header(patched(data, 4, ">B", 0))


def test_truncated() -> None:
    data = pack(make_stream())
    cut = data[:-10]
    with pytest.raises(FormatError, match=f"truncated .raq file: expected {len(data)} bytes, got {len(cut)}"):
        unpack(cut)
    with pytest.raises(FormatError, match="truncated"):
        read_header(data[:40])


def test_crc_mismatch_anywhere() -> None:
    data = pack(make_stream())
    for offset in (5, 14, 20, 40, len(data) - 6, len(data) - 1):
        damaged = bytearray(data)
        damaged[offset] ^= 0x10
        with pytest.raises(FormatError, match=r"corrupt \.raq file: CRC mismatch"):
            unpack(bytes(damaged))
    with pytest.raises(FormatError, match="CRC mismatch"):
        read_header(data[:-1] + bytes([data[-1] ^ 1]))


def test_trailing_garbage() -> None:
    data = pack(make_stream())
    with pytest.raises(FormatError, match="4 bytes of trailing data after the end of the stream"):
        unpack(data + b"junk")  # an intact stream with bytes appended: said so, not "CRC mismatch"
    with pytest.raises(FormatError, match="CRC mismatch"):
        unpack(data[:-5] + bytes([data[-5] ^ 1]) + data[-4:] + b"junk")  # damaged as well
    # garbage inside the CRC'd region: the length check is what fails
    with pytest.raises(FormatError, match="4 bytes of trailing data"):
        unpack(with_crc(data[:-4] + b"junk"))


# ---------------------------------------------------------------- field errors (CRC recomputed)


@pytest.mark.parametrize(
    "offset,fmt,value,message",
    [
        (5, ">B", 0x02, "unknown flag bits 0x02"),
        (5, ">B", 0x81, "unknown flag bits 0x81"),
        (14, ">B", 2, "unknown adapter id 2"),
        (15, ">H", 1, "codebook size 1 is below 2"),
        (15, ">H", 0, "codebook size 0 is below 2"),
        (21, ">H", 0, "image size 0x479 is empty"),
        (23, ">H", 0, "image size 641x0 is empty"),
        (25, ">B", 2, "unknown colour mode 2"),
        (26, ">B", 12, "unsupported bit depth 12"),
        (26, ">B", 0, "unsupported bit depth 0"),
        (35, ">B", 2, "unknown entropy coder id 2"),
        (35, ">B", 0, "context checksum on an order-0 stream"),
    ],
)
def test_bad_field(offset: int, fmt: str, value: int, message: str) -> None:
    data = patched(pack(make_stream()), offset, fmt, value)
    with pytest.raises(FormatError, match=message):
        unpack(data)
    with pytest.raises(FormatError, match=message):
        read_header(data)


def test_alpha_flag_without_alpha_section() -> None:
    data = patched(pack(make_stream(b"")), 5, ">B", 0x01)
    with pytest.raises(FormatError, match="alpha flag and alpha section length disagree"):
        unpack(data)


def test_alpha_section_without_flag() -> None:
    data = patched(pack(make_stream()), 5, ">B", 0x00)
    with pytest.raises(FormatError, match="alpha flag and alpha section length disagree"):
        unpack(data)


def test_empty_index_section() -> None:
    stream = make_stream(b"")
    data = pack(stream)
    # move the index bytes into the alpha section: lengths still add up, flag says alpha
    body = bytearray(data[:-4])
    struct.pack_into(">BII", body, 26, 16, 0, len(stream.indices_section))
    body[5] = 0x01
    with pytest.raises(FormatError, match="empty index section"):
        unpack(with_crc(bytes(body)))


def test_section_lengths_must_add_up() -> None:
    data = pack(make_stream())
    shorter = patched(data, 27, ">I", 40)  # one index byte unaccounted for
    with pytest.raises(FormatError, match="1 bytes of trailing data"):
        unpack(shorter)
    longer = patched(data, 27, ">I", 42)  # CRC recomputed: intact file, lying header
    with pytest.raises(FormatError, match="header declares"):
        unpack(longer)
    huge = patched(data, 31, ">I", 0xFFFFFFFF)  # must not allocate: it is only compared
    with pytest.raises(FormatError, match="header declares"):
        unpack(huge)


# ---------------------------------------------------------------- pack validation


@pytest.mark.parametrize(
    "changes",
    [
        dict(version=4),
        dict(model_fingerprint=b"short"),
        dict(model_fingerprint="0123456789abcdef"),
        dict(adapter="vq"),
        dict(codebook_size=1),
        dict(codebook_size=65536),
        dict(codebook_size=True),
        dict(codebook_crc=-1),
        dict(codebook_crc=1 << 32),
        dict(width=0),
        dict(width=65536),
        dict(height=0),
        dict(height=70000),
        dict(mode="RGBA"),
        dict(bit_depth=12),
        dict(has_alpha=1),
        dict(width=3.0),
        dict(version=1),
        dict(coder="rans"),
        dict(context_checksum=-1),
        dict(context_checksum=1 << 32),
        dict(coder="order0"),  # an order-0 stream carries no context checksum
    ],
)
def test_pack_rejects_bad_header(changes: dict[str, object]) -> None:
    stream = make_stream()
    bad = dataclasses.replace(stream, header=dataclasses.replace(stream.header, **changes))
    with pytest.raises(ValueError):
        pack(bad)


def test_pack_rejects_inconsistent_sections() -> None:
    stream = make_stream()
    with pytest.raises(ValueError):
        pack(dataclasses.replace(stream, indices_section=b""))
    with pytest.raises(ValueError):  # flag set, no alpha
        pack(dataclasses.replace(stream, alpha_section=b""))
    with pytest.raises(ValueError):  # alpha without the flag
        pack(dataclasses.replace(stream, header=dataclasses.replace(stream.header, has_alpha=False)))
    with pytest.raises(ValueError):
        pack(dataclasses.replace(stream, indices_section="text"))  # type: ignore[arg-type]


def test_errors_are_value_errors_with_one_sentence() -> None:
    assert issubclass(FormatError, ValueError)
    try:
        unpack(b"\x89RAQ" + bytes(40))
    except FormatError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        pytest.fail("expected FormatError")


# ---------------------------------------------------------------- version 1 (read only)


def _version1(stream: Stream) -> bytes:
    """A version-1 file: the 35-byte header without coder and context checksum (order-0 only)."""
    h = stream.header
    head = struct.pack(
        ">4sBB8sBHIHHBBII",
        B.MAGIC,
        1,
        1 if h.has_alpha else 0,
        h.model_fingerprint,
        B.ADAPTERS.index(h.adapter),
        h.codebook_size,
        h.codebook_crc,
        h.width,
        h.height,
        B.MODES.index(h.mode),
        h.bit_depth,
        len(stream.indices_section),
        len(stream.alpha_section),
    )
    return with_crc(head + stream.indices_section + stream.alpha_section)


def test_version1_files_still_read() -> None:
    stream = make_stream()
    data = _version1(stream)
    assert len(data) == 35 + len(stream.indices_section) + len(stream.alpha_section) + 4
    parsed = unpack(data)
    assert parsed.header == dataclasses.replace(stream.header, version=1, coder="order0", context_checksum=0)
    assert parsed.indices_section == stream.indices_section and parsed.alpha_section == stream.alpha_section
    assert read_header(data).version == 1
    with pytest.raises(FormatError, match="truncated"):
        unpack(data[:-3])


# ---------------------------------------------------------------- version 3 (residual layers)


def _refined(sections: tuple[bytes, ...], layers: tuple[Layer, ...] | None = None, alpha: bytes = b"") -> Stream:
    base = make_stream(alpha)
    if layers is None:
        layers = (Layer(7, len(sections)),) if sections else ()
    return dataclasses.replace(
        base, header=dataclasses.replace(base.header, version=3, layers=layers), refinement_sections=sections
    )


@pytest.mark.parametrize("alpha", [b"", b"\x78\x9c-alpha"])
def test_version3_round_trip(alpha: bytes) -> None:
    stream = _refined((b"\x01\x02\x03\x04", b"", b"\x05" * 8), alpha=alpha)
    data = pack(stream)
    assert data[4] == 3 and data[40] == 1 and data[41:43] == bytes([7, 3])
    assert len(data) == 43 + 3 * 4 + len(stream.indices_section) + 12 + len(alpha) + 4
    assert unpack(data) == stream
    assert read_header(data).to_dict()["layers"] == [[7, 3]]


def test_version3_layers_round_trip() -> None:
    sections = (b"a", b"bb", b"ccc", b"dddd", b"eeeee")
    stream = _refined(sections, layers=(Layer(2, 2), Layer(6, 1), Layer(9, 2)))
    data = pack(stream)
    assert data[40] == 3 and data[41:47] == bytes([2, 2, 6, 1, 9, 2])
    assert B.header_size(3, stream.header.layers) == 41 + 6 + 5 * 4
    assert unpack(data) == stream


def test_version3_without_refinement() -> None:
    stream = _refined(())
    data = pack(stream)
    assert data[40] == 0 and len(data) == 41 + len(stream.indices_section) + 4 and unpack(data) == stream


def _recrc(body: bytes) -> bytes:
    return body + struct.pack(">I", zlib.crc32(body))


def test_version3_damaged_fields() -> None:
    data = pack(_refined((b"abcd", b"efgh")))
    body = bytearray(data[:-4])
    body[41] = 32  # level above 31
    with pytest.raises(FormatError, match="level 32"):
        unpack(_recrc(bytes(body)))
    body = bytearray(data[:-4])
    body[42] = 9  # more sections than the stage has groups
    with pytest.raises(FormatError, match="corrupt|truncated"):
        unpack(_recrc(bytes(body)))
    body = bytearray(data[:-4])
    body[42] = 0  # a layer without sections
    with pytest.raises(FormatError, match="0 sections"):
        unpack(_recrc(bytes(body)))
    body = bytearray(data[:-4])
    body[40] = 5  # more layers than a stream has (the table then reads into the lengths)
    with pytest.raises(FormatError, match="corrupt|truncated"):
        unpack(_recrc(bytes(body)))
    body = bytearray(data[:-4])
    body[43:47] = struct.pack(">I", 5)  # a section length that does not add up
    with pytest.raises(FormatError, match="corrupt"):
        unpack(_recrc(bytes(body)))
    for cut in (40, 42, 44, len(data) - 5):
        with pytest.raises(FormatError, match="truncated"):
            unpack(data[:cut])


def test_version3_is_only_for_layer_fields() -> None:
    base = make_stream()
    with pytest.raises(ValueError, match="format version 3"):
        pack(dataclasses.replace(base, header=dataclasses.replace(base.header, layers=(Layer(3, 1),))))
    with pytest.raises(ValueError, match="add up"):
        pack(_refined((b"x",), layers=()))
    with pytest.raises(ValueError, match="add up"):
        pack(_refined((), layers=(Layer(3, 1),)))
    with pytest.raises(ValueError, match="level"):
        pack(_refined((b"x",), layers=(Layer(32, 1),)))
    with pytest.raises(ValueError, match="groups"):
        pack(_refined((b"x",) * 17, layers=(Layer(3, 17),)))
    with pytest.raises(ValueError, match="at most 4"):
        pack(_refined((b"x",) * 5, layers=tuple(Layer(i, 1) for i in range(5))))
