"""The ``.raq`` container (docs/FORMAT.md is the specification this module implements).

Fixed big-endian header (35 bytes in version 1; version 2 adds the entropy coder id and the context
model checksum: 40 bytes), the index section, an optional alpha section, then a CRC32 of everything
before it. Version 2 is written; both versions are read.

``unpack`` checks, in order: magic (so a short text file is "not a .raq file"),
minimum length, version, that the file is at least as long as its header
declares (a cut-off file is reported as truncated, an intact file whose header
lies as corrupt), the CRC, then every field's range and that
the section lengths account for the file exactly.  Nothing is allocated from
a field before it is checked.
"""

from __future__ import annotations

import os
import stat
import struct
import zlib
from dataclasses import dataclass
from typing import IO, Any, NamedTuple

from ..errors import FormatError

__all__ = [
    "FORMAT_VERSION",
    "REFINED_VERSION",
    "READ_VERSIONS",
    "CODERS",
    "MAGIC",
    "HEADER_SIZE",
    "header_size",
    "CRC_SIZE",
    "MIN_FILE_SIZE",
    "ADAPTERS",
    "MODES",
    "BIT_DEPTHS",
    "FormatError",
    "Header",
    "Layer",
    "Stream",
    "pack",
    "unpack",
    "read_header",
    "read_stream",
]

FORMAT_VERSION = 2  # what a model without a refinement stage writes (byte-identical to earlier releases)
REFINED_VERSION = 3  # what a model with a refinement stage (model v2) writes
READ_VERSIONS = (1, 2, 3)
# Entropy coder of the index section: order-0 table (the only one in version 1) or the model's context model.
CODERS = ("order0", "context")
MAGIC = b"\x89RAQ"
ADAPTERS = ("seq2seq", "cluster")
MODES = ("L", "RGB")
BIT_DEPTHS = (8, 16)
FLAG_ALPHA = 0x01

# magic, version, flags, fingerprint, adapter, K~, codebook CRC, width, height, mode, depth, 2 section lengths
_HEADER = struct.Struct(">4sBB8sBHIHHBBII")
# version 2 appends: entropy coder id, context model checksum
_HEADER_V2_TAIL = struct.Struct(">BI")
HEADER_SIZE = _HEADER.size + _HEADER_V2_TAIL.size  # 40, the size of the header this version writes
# version 3 appends: the number N of residual layers, N x (step level, section count), then one uint32
# length per section
_LAYER_COUNT = struct.Struct(">B")
_LAYER = struct.Struct(">BB")
_SECTION_LENGTH = struct.Struct(">I")
MAX_LAYERS = 4
MAX_REFINE_LEVEL = 31
MAX_LAYER_SECTIONS = 16  # the residual stage's coefficient groups (model.residual.GROUP_ENDS)
MAX_REFINE_SECTIONS = MAX_LAYERS * MAX_LAYER_SECTIONS
CRC_SIZE = 4
MIN_FILE_SIZE = _HEADER.size + CRC_SIZE  # the smallest possible (version 1) file
_U16_MAX = 0xFFFF
MAX_SIDE = _U16_MAX  # width and height are uint16
_U32_MAX = 0xFFFFFFFF
_LENGTHS_OFFSET = 27  # where the two section lengths start


class Layer(NamedTuple):
    """One residual layer of a version 3 stream: its step level and how many leading groups it codes."""

    level: int
    groups: int


@dataclass(frozen=True)
class Header:
    version: int
    model_fingerprint: bytes  # 8 bytes
    adapter: str
    codebook_size: int
    codebook_crc: int
    width: int
    height: int
    mode: str
    bit_depth: int
    has_alpha: bool
    coder: str = "order0"
    context_checksum: int = 0  # CRC-32 of the context model (``raqcodec.entropy.context.checksum``); 0 for order0
    layers: tuple[Layer, ...] = ()  # version 3: the residual layers, coarsest first; () is the base alone

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly fields (fingerprint and codebook CRC as hex strings)."""
        return {
            "version": self.version,
            "model_fingerprint": self.model_fingerprint.hex(),
            "adapter": self.adapter,
            "codebook_size": self.codebook_size,
            "codebook_crc": f"{self.codebook_crc:08x}",
            "width": self.width,
            "height": self.height,
            "mode": self.mode,
            "bit_depth": self.bit_depth,
            "has_alpha": self.has_alpha,
            "coder": self.coder,
            "context_checksum": f"{self.context_checksum:08x}",
            **({"layers": [list(x) for x in self.layers]} if self.version >= REFINED_VERSION else {}),
        }


@dataclass(frozen=True)
class Stream:
    header: Header
    indices_section: bytes
    alpha_section: bytes
    refinement_sections: tuple[bytes, ...] = ()  # version 3: each layer's groups in order, layer after layer


# ---------------------------------------------------------------- pack


def _require_int(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")


def _validate(stream: Stream) -> None:
    h = stream.header
    if h.version not in (FORMAT_VERSION, REFINED_VERSION):
        raise ValueError(
            f"this raqcodec writes format versions {FORMAT_VERSION} and {REFINED_VERSION}, not {h.version!r}"
        )
    sections = stream.refinement_sections
    if h.version == FORMAT_VERSION and (h.layers or sections):
        raise ValueError(f"residual layers need format version {REFINED_VERSION}")
    if not isinstance(h.layers, tuple) or len(h.layers) > MAX_LAYERS:
        raise ValueError(f"layers must be a tuple of at most {MAX_LAYERS} Layer(level, groups)")
    for layer in h.layers:
        _require_int("a layer's level", layer[0], 0, MAX_REFINE_LEVEL)
        _require_int("a layer's groups", layer[1], 1, MAX_LAYER_SECTIONS)
    if sum(layer[1] for layer in h.layers) != len(sections):
        raise ValueError("the layers' group counts must add up to the number of residual sections")
    if not all(isinstance(x, bytes) and len(x) <= _U32_MAX for x in sections):
        raise ValueError("residual sections must be bytes")
    if h.coder not in CODERS:
        raise ValueError(f"coder must be one of {CODERS}, got {h.coder!r}")
    _require_int("context_checksum", h.context_checksum, 0, _U32_MAX)
    if h.coder == "order0" and h.context_checksum:
        raise ValueError("context_checksum must be 0 for the order0 coder")
    if not isinstance(h.model_fingerprint, bytes) or len(h.model_fingerprint) != 8:
        raise ValueError("model_fingerprint must be exactly 8 bytes")
    if h.adapter not in ADAPTERS:
        raise ValueError(f"adapter must be one of {ADAPTERS}, got {h.adapter!r}")
    _require_int("codebook_size", h.codebook_size, 2, _U16_MAX)
    _require_int("codebook_crc", h.codebook_crc, 0, _U32_MAX)
    _require_int("width", h.width, 1, _U16_MAX)
    _require_int("height", h.height, 1, _U16_MAX)
    if h.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {h.mode!r}")
    if h.bit_depth not in BIT_DEPTHS or isinstance(h.bit_depth, bool):
        raise ValueError(f"bit_depth must be 8 or 16, got {h.bit_depth!r}")
    if not isinstance(h.has_alpha, bool):
        raise ValueError("has_alpha must be a bool")
    if not isinstance(stream.indices_section, bytes) or not isinstance(stream.alpha_section, bytes):
        raise ValueError("sections must be bytes")
    if not 1 <= len(stream.indices_section) <= _U32_MAX:
        raise ValueError(f"index section length must be in 1..{_U32_MAX}, got {len(stream.indices_section)}")
    if len(stream.alpha_section) > _U32_MAX:
        raise ValueError("alpha section is too long for the container")
    if h.has_alpha != bool(stream.alpha_section):
        raise ValueError("has_alpha must be true exactly when the alpha section is non-empty")


def pack(stream: Stream) -> bytes:
    """Serialize a stream; raises ValueError for any out-of-range field."""
    _validate(stream)
    h = stream.header
    head = _HEADER.pack(
        MAGIC,
        h.version,
        FLAG_ALPHA if h.has_alpha else 0,
        h.model_fingerprint,
        ADAPTERS.index(h.adapter),
        h.codebook_size,
        h.codebook_crc,
        h.width,
        h.height,
        MODES.index(h.mode),
        h.bit_depth,
        len(stream.indices_section),
        len(stream.alpha_section),
    ) + _HEADER_V2_TAIL.pack(CODERS.index(h.coder), h.context_checksum)
    if h.version >= REFINED_VERSION:
        head += _LAYER_COUNT.pack(len(h.layers)) + b"".join(_LAYER.pack(*layer) for layer in h.layers)
        head += b"".join(_SECTION_LENGTH.pack(len(x)) for x in stream.refinement_sections)
    body = b"".join((head, stream.indices_section, *stream.refinement_sections, stream.alpha_section))
    return body + struct.pack(">I", zlib.crc32(body))


# ---------------------------------------------------------------- unpack


def _check_envelope(data: bytes) -> None:
    """Length, magic, version, declared length and CRC: the checks before any field is trusted."""
    if data[:4] != MAGIC[: len(data[:4])]:  # magic first: a short text file is not a "truncated" stream
        raise FormatError("not a .raq file (bad magic)")
    if len(data) < MIN_FILE_SIZE:
        raise FormatError(f"truncated .raq file: expected at least {MIN_FILE_SIZE} bytes, got {len(data)}")
    if data[4] not in READ_VERSIONS:
        raise FormatError(
            f"unsupported .raq format version {data[4]} (this raqcodec reads versions "
            f"{', '.join(map(str, READ_VERSIONS))})"
        )
    version = data[4]
    minimum = header_size(version) + CRC_SIZE
    if len(data) < minimum:
        raise FormatError(f"truncated .raq file: expected at least {minimum} bytes, got {len(data)}")
    # every count is one byte, so each length below is bounded before it is trusted
    minimum += _layer_count(data) * _LAYER.size
    if len(data) < minimum:
        raise FormatError(f"truncated .raq file: expected at least {minimum} bytes, got {len(data)}")
    layers = _layer_table(data, _layer_count(data))
    minimum = header_size(version, layers) + CRC_SIZE
    if len(data) < minimum:
        raise FormatError(f"truncated .raq file: expected at least {minimum} bytes, got {len(data)}")
    index_len, alpha_len = struct.unpack_from(">II", data, _LENGTHS_OFFSET)
    sections = sum(layer.groups for layer in layers)
    expected = minimum + index_len + alpha_len + sum(_section_lengths(data, len(layers), sections))  # Python ints
    (stored,) = struct.unpack_from(">I", data, len(data) - CRC_SIZE)
    intact = zlib.crc32(memoryview(data)[:-CRC_SIZE]) == stored
    if len(data) < expected:
        # A cut-off file fails its CRC too; an intact one whose header lies is corrupt, not truncated.
        if intact:
            raise FormatError(f"corrupt .raq file: header declares {expected} bytes, file has {len(data)}")
        raise FormatError(
            f"truncated .raq file: expected {expected} bytes, got {len(data)} (or a corrupt length field)"
        )
    if not intact:
        if (
            len(data) > expected
            and zlib.crc32(memoryview(data)[: expected - CRC_SIZE])
            == struct.unpack_from(">I", data, expected - CRC_SIZE)[0]
        ):  # an intact stream with something appended to it
            raise FormatError(
                f"corrupt .raq file: {len(data) - expected} bytes of trailing data after the end "
                "of the stream (the stream before them is intact)"
            )
        raise FormatError("corrupt .raq file: CRC mismatch")


def header_size(version: int, layers: tuple[Layer, ...] | list[Layer] = ()) -> int:
    """Bytes of header in a file of this format version (version 3: with these residual layers)."""
    if version == 1:
        return _HEADER.size
    if version == 2:
        return HEADER_SIZE
    sections = sum(layer.groups for layer in layers)
    return HEADER_SIZE + _LAYER_COUNT.size + len(layers) * _LAYER.size + sections * _SECTION_LENGTH.size


def _layer_count(data: bytes) -> int:
    """N of a version 3 file whose fixed header is present; 0 for earlier versions."""
    return data[HEADER_SIZE] if data[4] >= REFINED_VERSION else 0


def _layer_table(data: bytes, count: int) -> tuple[Layer, ...]:
    start = HEADER_SIZE + _LAYER_COUNT.size
    return tuple(Layer(*_LAYER.unpack_from(data, start + i * _LAYER.size)) for i in range(count))


def _section_lengths(data: bytes, layers: int, sections: int) -> list[int]:
    start = HEADER_SIZE + _LAYER_COUNT.size + layers * _LAYER.size
    return [_SECTION_LENGTH.unpack_from(data, start + i * _SECTION_LENGTH.size)[0] for i in range(sections)]


def _parse_header(data: bytes) -> tuple[Header, int, int, list[int]]:
    """Fields of an envelope-checked file, each range-checked; returns (header, index_len, alpha_len,
    refinement section lengths)."""
    (
        _,
        version,
        flags,
        fingerprint,
        adapter_id,
        size,
        book_crc,
        width,
        height,
        mode_id,
        depth,
        index_len,
        alpha_len,
    ) = _HEADER.unpack_from(data)
    coder_id, context_checksum = _HEADER_V2_TAIL.unpack_from(data, _HEADER.size) if version >= 2 else (0, 0)
    if coder_id >= len(CODERS):
        raise FormatError(f"corrupt .raq file: unknown entropy coder id {coder_id}")
    if coder_id == 0 and context_checksum:
        raise FormatError("corrupt .raq file: a context checksum on an order-0 stream")
    if flags & ~FLAG_ALPHA:
        raise FormatError(f"corrupt .raq file: unknown flag bits 0x{flags:02x}")
    if adapter_id >= len(ADAPTERS):
        raise FormatError(f"corrupt .raq file: unknown adapter id {adapter_id}")
    if size < 2:
        raise FormatError(f"corrupt .raq file: codebook size {size} is below 2")
    if width < 1 or height < 1:
        raise FormatError(f"corrupt .raq file: image size {width}x{height} is empty")
    if mode_id >= len(MODES):
        raise FormatError(f"corrupt .raq file: unknown colour mode {mode_id}")
    if depth not in BIT_DEPTHS:
        raise FormatError(f"corrupt .raq file: unsupported bit depth {depth}")
    has_alpha = bool(flags & FLAG_ALPHA)
    if has_alpha != (alpha_len > 0):
        raise FormatError("corrupt .raq file: alpha flag and alpha section length disagree")
    if index_len < 1:
        raise FormatError("corrupt .raq file: empty index section")
    layers = _layer_table(data, _layer_count(data))
    if len(layers) > MAX_LAYERS:
        raise FormatError(f"corrupt .raq file: {len(layers)} residual layers (at most {MAX_LAYERS})")
    for layer in layers:
        if layer.level > MAX_REFINE_LEVEL or not 1 <= layer.groups <= MAX_LAYER_SECTIONS:
            raise FormatError(f"corrupt .raq file: residual layer at level {layer.level} with {layer.groups} sections")
    lengths = _section_lengths(data, len(layers), sum(layer.groups for layer in layers))
    expected = header_size(version, layers) + CRC_SIZE + index_len + alpha_len + sum(lengths)
    if len(data) != expected:
        raise FormatError(f"corrupt .raq file: {len(data) - expected} bytes of trailing data after the sections")
    header = Header(
        version=version,
        model_fingerprint=fingerprint,
        adapter=ADAPTERS[adapter_id],
        codebook_size=size,
        codebook_crc=book_crc,
        width=width,
        height=height,
        mode=MODES[mode_id],
        bit_depth=depth,
        has_alpha=has_alpha,
        coder=CODERS[coder_id],
        context_checksum=context_checksum,
        layers=layers,
    )
    return header, index_len, alpha_len, lengths


def unpack(data: bytes) -> Stream:
    """Parse and fully validate a ``.raq`` file; raises FormatError on any defect."""
    data = bytes(data)
    _check_envelope(data)
    header, index_len, alpha_len, lengths = _parse_header(data)
    start = header_size(header.version, header.layers)
    indices = data[start : start + index_len]
    start += index_len
    sections = []
    for length in lengths:
        sections.append(data[start : start + length])
        start += length
    return Stream(
        header=header,
        indices_section=indices,
        alpha_section=data[start : start + alpha_len],
        refinement_sections=tuple(sections),
    )


def read_header(data: bytes) -> Header:
    """The header of a ``.raq`` file, after the same container and CRC checks as ``unpack``."""
    data = bytes(data)
    _check_envelope(data)
    return _parse_header(data)[0]


MAX_STREAM_BYTES = 1 << 30  # no .raq file of a decodable image comes near this


def read_stream(source: bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes]) -> bytes:
    """The bytes of a stream given as bytes, a path or a binary file object (read to its end); FormatError
    for anything else, a file that cannot be read, or an absurd size (refused before reading it)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as fh:
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    raise FormatError(f"{os.fspath(source)} is not a regular file")
                return _read_limited(fh, os.fspath(source))
        except OSError as exc:
            raise FormatError(f"cannot read {os.fspath(source)}: {exc.strerror or exc}") from None
    if callable(getattr(source, "read", None)):
        return _read_limited(source, getattr(source, "name", "the file object"))
    raise FormatError(
        f"cannot read a .raq stream from {type(source).__name__}: give bytes, a path or a binary file object"
    )


def _read_limited(fh: Any, name: object) -> bytes:
    data = fh.read(MAX_STREAM_BYTES + 1)
    if not isinstance(data, (bytes, bytearray)):
        raise FormatError(f"{name} is not open in binary mode")
    if len(data) > MAX_STREAM_BYTES:
        raise FormatError(f"{name} is larger than any .raq file ({MAX_STREAM_BYTES} bytes); refusing to read it")
    return bytes(data)


def describe(data: bytes) -> dict[str, Any]:
    """Header fields, total bytes and bits per pixel of a stream (validates the container and its CRC)."""
    return summary(read_header(data), len(data))


def summary(header: Header, size: int) -> dict[str, Any]:
    """Header fields plus the stream's size in bytes and its bits per pixel."""
    return {**header.to_dict(), "bytes": size, "bpp": size * 8 / (header.width * header.height)}
