"""Scalable streams: cut a format 3 file down to a smaller budget without decoding any pixels.

A format 3 stream stores its residual as layers, coarsest first, each one independent section per leading
coefficient group, in order. Dropping trailing sections leaves a valid stream that decodes to exactly the
pixels an encoder would give with only those sections (the header says how many groups each layer
keeps); with no section left it is the base stage alone. A stream encoded with ``layers=`` budgets cut
back to one of them is the file coded for that budget. Nothing is recomputed but the header and the CRC, so trimming
is instant and needs no model (this module imports no torch).
"""

from __future__ import annotations

import dataclasses

from .errors import TrimError
from .io import bitstream


def trimmed_sizes(data: bytes) -> list[int]:
    """File sizes in bytes of the stream with 0, 1, ... G refinement sections kept (G: all of them)."""
    stream = bitstream.unpack(data)
    return [len(_keep(stream, g)) for g in range(len(stream.refinement_sections) + 1)]


def trim(data: bytes, *, bpp: float | None = None, groups: int | None = None) -> bytes:
    """The stream with as many leading refinement sections as fit ``bpp`` (whole file bits per pixel),
    or exactly ``groups`` of them. The result is never larger than the input."""
    if (bpp is None) == (groups is None):
        raise ValueError("give exactly one of bpp and groups")
    stream = bitstream.unpack(data)
    h = stream.header
    available = len(stream.refinement_sections)
    if h.version < bitstream.REFINED_VERSION:
        raise TrimError(f"a format {h.version} stream has no refinement stages to drop")
    if groups is not None:
        if isinstance(groups, bool) or not isinstance(groups, int) or not 0 <= groups <= available:
            raise ValueError(f"groups must be an integer in 0..{available}, got {groups!r}")
        return _keep(stream, groups)
    assert bpp is not None
    pixels = h.width * h.height
    for kept in range(available, -1, -1):
        out = _keep(stream, kept)
        if len(out) * 8 <= bpp * pixels:
            return out
    smallest = len(_keep(stream, 0)) * 8 / pixels
    raise TrimError(
        f"{bpp:g} bpp is below this stream's base stage ({smallest:.4f} bpp); re-encode it for a smaller budget"
    )


def _keep(stream: bitstream.Stream, sections: int) -> bytes:
    """The stream with its first ``sections`` residual sections: whole layers, then the leading groups of
    the layer that is cut (a layer left with none is dropped)."""
    layers, left = [], sections
    for layer in stream.header.layers:
        if left <= 0:
            break
        layers.append(bitstream.Layer(layer.level, min(layer.groups, left)))
        left -= layer.groups
    header = dataclasses.replace(stream.header, layers=tuple(layers))
    kept = stream.refinement_sections[:sections]
    return bitstream.pack(dataclasses.replace(stream, header=header, refinement_sections=kept))
