"""Encode an image to a ``.raq`` stream and back: the pipeline behind the API and the CLI.

image -> (imageio) 8-bit RGB, padded to multiples of 4 -> (model) latents -> (rate control / explicit K~)
index grid -> (entropy) rANS section -> (bitstream) container. Decoding reverses it with the exact decoder.
"""

from __future__ import annotations

import functools
import math
import os
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch

from . import bitstream, imageio, registry, tiling
from .entropy import empirical_entropy_bits
from .indexcoder import ENTROPY_CHOICES, ContextCoder, IndexCoder, Order0Coder
from .model import CodecModel, codebook_crc
from .ratecontrol import BudgetError, RateChoice, SectionCoder, SectionEstimate, choose_size

ImageInput = str | os.PathLike | PIL.Image.Image | np.ndarray
ModelRef = str | os.PathLike | CodecModel | None
MAX_SIDE = bitstream.MAX_SIDE
# Streams declaring more pixels than Pillow would open are refused before anything is allocated for them.
MAX_PIXELS = PIL.Image.MAX_IMAGE_PIXELS or 2**28


class CodecError(ValueError):
    """A stream cannot be decoded with the models at hand (wrong model, codebook mismatch), or a request
    cannot be served here (no CUDA device, image too large for the format)."""


@dataclass
class EncodeResult:
    data: bytes
    width: int
    height: int
    codebook_size: int
    adapter: str
    model: str
    coder: str
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def bpp(self) -> float:
        return len(self.data) * 8 / (self.width * self.height)


# Encoder-side index refinement (raqcodec.refine): steps by default and the most allowed. Images over the
# tile budget (raqcodec.tiling) are refined tile by tile, like every other network evaluation.
DEFAULT_REFINE_STEPS = 2
MAX_REFINE_STEPS = 50


def pick_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CodecError("device cuda was asked for, but no CUDA device is available")
    return dev


def _model(ref: ModelRef, device: str | torch.device) -> CodecModel:
    model = ref if isinstance(ref, CodecModel) else registry.load(ref)
    return model.to(pick_device(device))


def index_coder(model: CodecModel, entropy: str = "auto") -> IndexCoder:
    """The index coder for ``entropy``: "context" (the model's context model), "order0", or "auto"
    (context when the model has one)."""
    if entropy not in ENTROPY_CHOICES:
        raise ValueError(f"entropy must be one of {', '.join(ENTROPY_CHOICES)}, got {entropy!r}")
    if entropy == "order0" or (entropy == "auto" and model.context is None):
        return Order0Coder()
    if model.context is None:
        raise CodecError(f"model {model.name} has no context model; use the order0 entropy coder")
    return ContextCoder(model.context)


def encode_detailed(image: ImageInput, *, bpp: float | None = None, codebook_size: int | None = None,
                    model: ModelRef = None, adapter: str = "seq2seq", device: str | torch.device = "auto",
                    refine: int = DEFAULT_REFINE_STEPS, entropy: str = "auto",
                    max_tile_pixels: int | None = None) -> EncodeResult:
    """Encode at a bitrate budget (``bpp``: all file bytes x 8 / pixels) or at an explicit ``codebook_size``.

    ``refine``: steps of decoder-aware index refinement (``raqcodec.refine``; 0 = nearest neighbour).
    Under a budget, refined indices are used only if their file still fits. ``entropy``: the index
    coder (``index_coder``). ``max_tile_pixels``: images larger than this run the networks in tiles of
    at most this many pixels (``raqcodec.tiling``; default $RAQCODEC_TILE_PIXELS or 2 MP): memory stays
    bounded, the stream format is the same.
    """
    if (bpp is None) == (codebook_size is None):
        raise ValueError("give exactly one of bpp and codebook_size")
    started = time.perf_counter()
    m = _model(model, device)
    coder = index_coder(m, entropy)
    positions = tiling.tile_positions(max_tile_pixels, m.config.downsampling)
    src = imageio.load_image(image)
    if max(src.width, src.height) > MAX_SIDE:
        raise CodecError(f"{src.width}x{src.height} is too large: .raq version {bitstream.FORMAT_VERSION} "
                         f"stores sides up to {MAX_SIDE} pixels")
    if not (isinstance(refine, int) and 0 <= refine <= MAX_REFINE_STEPS):
        raise ValueError(f"refine must be an integer in 0..{MAX_REFINE_STEPS}, got {refine!r}")
    padded = imageio.pad_to_multiple(src.rgb, m.config.downsampling)
    grid = (padded.shape[0] // m.config.downsampling, padded.shape[1] // m.config.downsampling)
    rows = m.analyse(padded, positions)
    del padded  # a copy when the image was padded; src.rgb stays for refinement's targets
    notes = list(src.notes)

    # Index grids are held as int32: rate control keeps a dozen (grids and the context coder's keys), which
    # is 0.6 GB in int64 for an 8000x6000 image.
    def refined(size: int, steps: int = refine) -> np.ndarray:
        return m.refined_indices(rows, grid, src.rgb, adapter, size, steps, positions).astype(np.int32)
    alpha = zlib.compress(src.alpha.tobytes(), 9) if src.alpha is not None else b""

    @functools.cache  # rate control and the refinement fallback ask for the same sizes
    def quantize(size: int) -> np.ndarray:
        return m.indices(rows, adapter, size).astype(np.int32)

    def section_of(indices: np.ndarray, size: int) -> bytes:
        return coder.encode(indices.reshape(grid), m.codebook(adapter, size))

    @functools.cache  # rate control only estimates quantize(size), so one estimate per size serves both searches
    def estimated_bits(size: int) -> int:
        return coder.estimate_bits(quantize(size).reshape(grid), m.codebook(adapter, size))

    def estimate(indices: np.ndarray, size: int) -> int:
        return estimated_bits(size)

    if codebook_size is not None:
        lo, hi = m.size_range
        if not lo <= codebook_size <= hi:
            raise BudgetError(f"codebook size {codebook_size} is outside model {m.name}'s range {lo}..{hi}")
        size = codebook_size
        indices = refined(size) if refine else quantize(size)
        section = section_of(indices, size)
    else:
        assert bpp is not None
        if not (math.isfinite(bpp) and bpp > 0):
            raise BudgetError(f"--bpp must be a positive number, got {bpp}")
        pixels = src.width * src.height
        overhead = bitstream.HEADER_SIZE + 4 + len(alpha)
        budget = int(bpp * pixels // 8) - overhead

        def describe(lo_bytes: int, hi_bytes: int) -> str:
            lo_bpp, hi_bpp = (lo_bytes + overhead) * 8 / pixels, (hi_bytes + overhead) * 8 / pixels
            return (f"{bpp:g} bpp is below what model {m.name} can reach for this image: "
                    f"{lo_bpp:.3f} to {hi_bpp:.3f} bpp (codebook sizes {m.size_range[0]}..{m.size_range[1]})")

        choice = choose_size(quantize, m.size_range, budget, describe, section_of, estimate)
        size, indices, section = choice.size, choice.indices, choice.section
        if refine:
            def error_of(indices: np.ndarray, size: int) -> float:
                return m.reconstruction_error(indices, grid, src.rgb, adapter, size, positions)

            size, indices, section = _refine_within_budget(choice, refined, quantize, budget, describe,
                                                           m.size_range[0], section_of, estimate, error_of)
            if size == m.size_range[1] and indices is not choice.indices and pixels <= ROOM_REFINE_MAX_PIXELS:
                indices, section = _refine_into_room(indices, section, refine, budget,
                                                     lambda steps: refined(size, steps),
                                                     lambda grid_: section_of(grid_, size))
    header = bitstream.Header(
        version=bitstream.FORMAT_VERSION, model_fingerprint=m.fingerprint_bytes, adapter=adapter,
        codebook_size=size, codebook_crc=codebook_crc(m.codebook(adapter, size)), width=src.width,
        height=src.height, mode=src.mode, bit_depth=src.bit_depth, has_alpha=bool(alpha),
        coder=coder.name, context_checksum=coder.checksum,
    )
    data = bitstream.pack(bitstream.Stream(header=header, indices_section=section, alpha_section=alpha))
    return EncodeResult(data=data, width=src.width, height=src.height, codebook_size=size, adapter=adapter,
                        model=m.name, coder=coder.name, seconds=time.perf_counter() - started, notes=notes)


def _refine_within_budget(choice: RateChoice, refined: Callable[[int], np.ndarray],
                          quantize: Callable[[int], np.ndarray], budget: int, describe: Callable[[int, int], str],
                          smallest: int, section_of: SectionCoder, estimate: SectionEstimate,
                          error_of: Callable[[np.ndarray, int], float]) -> tuple[int, np.ndarray, bytes]:
    """Refined indices under a byte budget. Refinement costs bits (about 1% with order-0 coding, 5-12%
    with the context model: refined indices are less predictable), and rate control packs the
    nearest-neighbour file tightly, so the refined grid at the chosen size rarely fits: then the largest
    smaller size that leaves room for the same extra bytes is refined instead, and kept if it decodes
    closer to the image than the plain choice (by the float decoder's MSE). The plain choice stands
    otherwise."""
    size = choice.size
    better = refined(size)
    section = section_of(better, size)
    if len(section) <= budget:
        return size, better, section
    extra = len(section) - len(choice.section)
    if size > smallest:
        try:
            fallback = choose_size(quantize, (smallest, size - 1), budget - extra, describe, section_of, estimate)
        except BudgetError:
            fallback = None
        if fallback is not None:
            better = refined(fallback.size)
            section = section_of(better, fallback.size)
            if len(section) <= budget and error_of(better, fallback.size) < error_of(choice.indices, choice.size):
                return fallback.size, better, section
    return choice.size, choice.indices, choice.section


# Under a budget, the model's largest codebook can leave room that no larger codebook can use; more
# refinement steps spend it. Measured on kodim23 at K~ = 1024 with 2 / 4 / 8 / 16 steps: 0.268 / 0.283 /
# 0.296 / 0.310 bpp and 31.12 / 31.38 / 31.67 / 31.93 dB.
MAX_ROOM_REFINE_STEPS = 16
# ...for images up to this size: up to 4 + 8 + 16 more steps take about a minute at 2 MP on a 2-core
# CPU, but would take over 20 minutes at 48 MP.
ROOM_REFINE_MAX_PIXELS = 1 << 21


def _refine_into_room(indices: np.ndarray, section: bytes, steps: int, budget: int,
                      refined_with: Callable[[int], np.ndarray],
                      section_of: Callable[[np.ndarray], bytes]) -> tuple[np.ndarray, bytes]:
    """Refined indices at twice, four times... the steps (up to MAX_ROOM_REFINE_STEPS) while the file still
    fits. Each doubling costs about as many bytes as the one before, so one that would not fit by that
    measure is not computed (each costs a refinement of that many steps)."""
    growth = 0
    while steps * 2 <= MAX_ROOM_REFINE_STEPS and len(section) + growth <= budget:
        steps *= 2
        more = refined_with(steps)
        more_section = section_of(more)
        if len(more_section) > budget:
            break
        growth = len(more_section) - len(section)
        indices, section = more, more_section
    return indices, section


def encode(image: ImageInput, *, bpp: float | None = None, codebook_size: int | None = None,
           model: ModelRef = None, adapter: str = "seq2seq", device: str | torch.device = "auto",
           refine: int = DEFAULT_REFINE_STEPS, entropy: str = "auto", max_tile_pixels: int | None = None) -> bytes:
    """Encode ``image`` (path, PIL image or array) to ``.raq`` bytes.

    Exactly one of ``bpp`` (a budget on the whole file: bytes x 8 / pixels <= bpp) and ``codebook_size``
    (an explicit K~) is given. Raises ``imageio.ImageError`` for unreadable input,
    ``ratecontrol.BudgetError`` for an unreachable budget or size, and ``CodecError`` for an image too
    large for the format or a device that is not there. ``max_tile_pixels``: see ``encode_detailed``.
    """
    return encode_detailed(image, bpp=bpp, codebook_size=codebook_size, model=model, adapter=adapter,
                           device=device, refine=refine, entropy=entropy, max_tile_pixels=max_tile_pixels).data


@dataclass
class Decoded:
    stream: bitstream.Stream
    model: CodecModel
    indices: np.ndarray  # (h, w) int64
    codebook: torch.Tensor  # (K~, d) integers at scale 2^-F
    alpha: np.ndarray | None  # (H, W) uint8


def _open(data: bytes, model: ModelRef) -> Decoded:
    stream = bitstream.unpack(data)
    h = stream.header
    if h.width * h.height > MAX_PIXELS:
        raise CodecError(f"stream declares {h.width}x{h.height} = {h.width * h.height} pixels, over the "
                         f"limit of {MAX_PIXELS}; refusing to decode it")
    candidates = [model] if isinstance(model, (str, os.PathLike)) else []
    m = model if isinstance(model, CodecModel) else registry.find_by_fingerprint(h.model_fingerprint, candidates)
    if not m.fingerprint_bytes == h.model_fingerprint:
        raise CodecError(f"stream was made with model {h.model_fingerprint.hex()}, not with {m.name}")
    lo, hi = m.size_range
    if not lo <= h.codebook_size <= hi:
        raise CodecError(f"stream codebook size {h.codebook_size} is outside model {m.name}'s range {lo}..{hi}")
    book = m.codebook(h.adapter, h.codebook_size)
    if codebook_crc(book) != h.codebook_crc:
        raise CodecError("codebook checksum mismatch: this machine computes a different codebook than the "
                         "encoder did (cluster adapter codebooks are recomputed in floating point)")
    f = m.config.downsampling  # pixels per index along each axis
    grid = ((h.height + f - 1) // f, (h.width + f - 1) // f)
    indices = _stream_coder(m, h).decode(stream.indices_section, grid, book)
    return Decoded(stream=stream, model=m, indices=indices, codebook=book,
                   alpha=_inflate_alpha(stream) if h.has_alpha else None)


def _stream_coder(m: CodecModel, h: bitstream.Header) -> IndexCoder:
    """The index coder a stream names, after checking this model has the same context model."""
    if h.coder == "order0":
        return Order0Coder()
    if m.context is None:
        raise CodecError(f"stream was coded with a context model (checksum {h.context_checksum:08x}), "
                         f"but model {m.name} has none")
    if m.context.checksum != h.context_checksum:
        raise CodecError(f"context model checksum mismatch: the stream needs {h.context_checksum:08x}, "
                         f"model {m.name} has {m.context.checksum:08x}")
    return ContextCoder(m.context)


def _inflate_alpha(stream: bitstream.Stream) -> np.ndarray:
    """The alpha plane, inflated to at most width x height bytes (a deflate bomb stops there)."""
    h = stream.header
    expected = h.width * h.height
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(stream.alpha_section, expected + 1)
    except zlib.error:
        raise bitstream.FormatError("corrupt .raq file: alpha section does not inflate") from None
    if len(raw) != expected or not inflater.eof:
        raise bitstream.FormatError("corrupt .raq file: alpha section has the wrong size")
    return np.frombuffer(raw, dtype=np.uint8).reshape(h.height, h.width)


def decode(data: bytes, *, model: ModelRef = None, device: str | torch.device = "auto",
           max_tile_pixels: int | None = None) -> PIL.Image.Image:
    """Decode ``.raq`` bytes to a PIL image (mode L or RGB, plus alpha and 16-bit when the source had them).

    The stream names its model by fingerprint; installed models are searched (``model`` is tried first).
    Raises ``bitstream.FormatError`` / ``entropy.EntropyError`` for corrupt input, ``CodecError`` when the
    model is missing or disagrees. ``max_tile_pixels``: images larger than this are synthesised in tiles
    of at most this many pixels (default $RAQCODEC_TILE_PIXELS or 2 MP); the pixels are the same.
    """
    budget = tiling.tile_pixels(max_tile_pixels)  # a bad budget is refused before any decoding work
    dec = _open(data, model)
    h = dec.stream.header
    dec.model.to(pick_device(device))
    positions = tiling.tile_positions(budget, dec.model.config.downsampling)
    rgb = dec.model.synthesize(dec.indices.reshape(-1), dec.codebook, dec.indices.shape, positions)
    rgb = imageio.crop(rgb, h.height, h.width)
    return imageio.to_pil(rgb, h.mode, dec.alpha, h.bit_depth)


def inspect(data: bytes, *, model: ModelRef = None) -> dict[str, Any]:
    """Header fields of a stream plus its VQ tokens: ``indices`` (h x w int64) and ``codebook`` (K~ x d
    float32), the index section's size ``payload_bits`` and, for comparison, ``order0_entropy_bits``: the
    order-0 empirical entropy of the index grid times its size."""
    dec = _open(data, model)
    info = bitstream.summary(dec.stream.header, len(data))  # already unpacked and CRC-checked
    info.update(model=dec.model.name, payload_bits=8 * len(dec.stream.indices_section),
                order0_entropy_bits=empirical_entropy_bits(dec.indices, dec.stream.header.codebook_size),
                indices=dec.indices,
                codebook=(dec.codebook.float() * 2.0**-dec.model.act_frac_bits).numpy())
    return info

