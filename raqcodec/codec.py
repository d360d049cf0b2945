"""Encode an image to a ``.raq`` stream and back: the pipeline behind the API and the CLI.

image -> (imageio) 8-bit RGB, padded to multiples of 4 -> (model) latents -> (rate control / explicit K~)
index grid -> (entropy) rANS section -> (bitstream) container. Decoding reverses it with the exact decoder.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import time
import zlib
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterator

import numpy as np
import PIL.Image
import torch

from . import bitstream, imageio, registry, tiling
from .entropy import empirical_entropy_bits
from .errors import CodecError
from .indexcoder import ENTROPY_CHOICES, ContextCoder, IndexCoder, Order0Coder
from .model import CodecModel, codebook_crc
from .residual import BASIS_BITS as RESIDUAL_BASIS_BITS
from .residual import GROUPS, pad_to_blocks
from .residual import STEP_BITS as RESIDUAL_STEP_BITS
from .residual_rate import BaseCandidate, ladder_candidates
from .residual_rate import search as residual_search
from .ratecontrol import BudgetError, RateChoice, SectionCoder, choose_size

ImageInput = imageio.ImageSource  # a path, image file bytes, a binary file object, a PIL image or an array
StreamInput = bytes | bytearray | memoryview | str | os.PathLike | IO[bytes]  # .raq bytes, a path or a file object
ModelRef = str | os.PathLike | CodecModel | None
MAX_SIDE = bitstream.MAX_SIDE
# Streams declaring more pixels than Pillow would open are refused before anything is allocated for them.
MAX_PIXELS = PIL.Image.MAX_IMAGE_PIXELS or 2**28


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
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage of the encode, in order
    budget_unused: str | None = None  # under bpp: why the file is well under the budget (the model's limit)

    @property
    def bpp(self) -> float:
        return len(self.data) * 8 / (self.width * self.height)


# Encoder-side index refinement (raqcodec.refine): steps by default and the most allowed. Images over the
# tile budget (raqcodec.tiling) are refined tile by tile, like every other network evaluation.
DEFAULT_REFINE_STEPS = 2
MAX_REFINE_STEPS = 50


DEVICE_TYPES = ("cpu", "cuda")


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" (CUDA when present), "cpu", "cuda" or "cuda:N" (or such a torch.device); CodecError otherwise."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in DEVICE_TYPES:
        raise CodecError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CodecError("device cuda was asked for, but no CUDA device is available")
    return dev


class _Stages:
    """Wall time per stage of one encode or decode (``raqcodec encode -v`` prints them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now


def _check_encode_arguments(bpp: object, codebook_size: object, adapter: object, refine: object, entropy: object,
                            max_tile_pixels: object) -> None:
    """Every argument checked before any work, each failure one of the documented errors."""
    if (bpp is None) == (codebook_size is None):
        raise BudgetError("give exactly one of bpp and codebook_size")
    if codebook_size is not None and (isinstance(codebook_size, bool) or not isinstance(codebook_size, numbers.Integral)):
        raise BudgetError(f"codebook_size must be an integer, got {codebook_size!r}")
    if bpp is not None and (isinstance(bpp, bool) or not isinstance(bpp, numbers.Real)
                            or not (math.isfinite(bpp) and bpp > 0)):
        raise BudgetError(f"bpp must be a positive number, got {bpp!r}")
    if adapter not in bitstream.ADAPTERS:
        raise CodecError(f"adapter must be one of {', '.join(bitstream.ADAPTERS)}, got {adapter!r}")
    if entropy not in ENTROPY_CHOICES:
        raise CodecError(f"entropy must be one of {', '.join(ENTROPY_CHOICES)}, got {entropy!r}")
    if isinstance(refine, bool) or not isinstance(refine, int) or not 0 <= refine <= MAX_REFINE_STEPS:
        raise CodecError(f"refine must be an integer in 0..{MAX_REFINE_STEPS}, got {refine!r}")
    try:
        tiling.tile_pixels(max_tile_pixels)  # type: ignore[arg-type]
    except ValueError as exc:
        raise CodecError(str(exc)) from None


def _model(ref: ModelRef, device: str | torch.device) -> CodecModel:
    model = ref if isinstance(ref, CodecModel) else registry.load(ref)
    return model.to(pick_device(device))


def index_coder(model: CodecModel, entropy: str = "auto") -> IndexCoder:
    """The index coder for ``entropy``: "context" (the model's context model), "order0", or "auto"
    (context when the model has one)."""
    if entropy not in ENTROPY_CHOICES:
        raise CodecError(f"entropy must be one of {', '.join(ENTROPY_CHOICES)}, got {entropy!r}")
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
    Under a budget the encoder searches refinement paths of up to max(``refine``, BUDGET_REFINE_STEPS)
    steps jointly with the codebook size and keeps the fitting grid that decodes closest (images up to
    BUDGET_SEARCH_MAX_PIXELS; larger ones search ``refine`` steps). ``entropy``: the index
    coder (``index_coder``). ``max_tile_pixels``: images larger than this run the networks in tiles of
    at most this many pixels (``raqcodec.tiling``; default $RAQCODEC_TILE_PIXELS or 2 MP): memory stays
    bounded, the stream format is the same.
    """
    _check_encode_arguments(bpp, codebook_size, adapter, refine, entropy, max_tile_pixels)
    started = time.perf_counter()
    stages = _Stages()
    m = _model(model, device)
    coder = index_coder(m, entropy)
    positions = tiling.tile_positions(max_tile_pixels, m.config.downsampling)
    stages.done("model")
    src = imageio.load_image(image)
    if max(src.width, src.height) > MAX_SIDE:
        raise CodecError(f"{src.width}x{src.height} is too large: .raq version {bitstream.FORMAT_VERSION} "
                         f"stores sides up to {MAX_SIDE} pixels")
    stages.done("read")
    padded = imageio.pad_to_multiple(src.rgb, m.config.downsampling)
    grid = (padded.shape[0] // m.config.downsampling, padded.shape[1] // m.config.downsampling)
    rows = m.analyse(padded, positions)
    stages.done("analysis")
    notes = list(src.notes)

    # Index grids are held as int32: rate control keeps a dozen (grids and the context coder's keys), which
    # is 0.6 GB in int64 for an 8000x6000 image.
    alpha = zlib.compress(src.alpha.tobytes(), 9) if src.alpha is not None else b""

    @functools.cache  # rate control's search and confirmation ask for the same sizes
    def quantize(size: int) -> np.ndarray:
        return m.indices(rows, adapter, size).astype(np.int32)

    def section_of(indices: np.ndarray, size: int) -> bytes:
        return coder.encode(indices.reshape(grid), m.codebook(adapter, size))

    @functools.cache  # rate control only estimates quantize(size): one estimate per size
    def estimated_bits(size: int) -> int:
        return coder.estimate_bits(quantize(size).reshape(grid), m.codebook(adapter, size))

    def estimate(indices: np.ndarray, size: int) -> int:
        return estimated_bits(size)

    budget_unused = None
    # format 3 for a model with a residual stage (its base-only streams too), 2 otherwise
    version = bitstream.REFINED_VERSION if m.residual is not None else bitstream.FORMAT_VERSION
    refine_level: int | None = None
    refinement_sections: tuple[bytes, ...] = ()
    if codebook_size is not None:
        lo, hi = m.size_range
        if not lo <= codebook_size <= hi:
            raise BudgetError(f"codebook size {codebook_size} is outside model {m.name}'s range {lo}..{hi}")
        size = int(codebook_size)
        indices = (m.refined_indices(rows, grid, src.rgb, adapter, size, refine, positions).astype(np.int32)
                   if refine else quantize(size))
        stages.done("refinement" if refine else "quantization")
        section = section_of(indices, size)
        stages.done("entropy coding")
    else:
        assert bpp is not None
        pixels = src.width * src.height
        overhead = bitstream.header_size(version) + 4 + len(alpha)
        budget = int(bpp * pixels // 8) - overhead

        def describe(lo_bytes: int, hi_bytes: int) -> str:
            lo_bpp, hi_bpp = (lo_bytes + overhead) * 8 / pixels, (hi_bytes + overhead) * 8 / pixels
            return (f"{bpp:g} bpp is below what model {m.name} can reach for this image: "
                    f"{lo_bpp:.3f} to {hi_bpp:.3f} bpp (codebook sizes {m.size_range[0]}..{m.size_range[1]})")

        choice = choose_size(quantize, m.size_range, budget, describe, section_of, estimate)
        size, indices, section = choice.size, choice.indices, choice.section
        stages.done("rate control")
        steps = 0
        limited = size == m.size_range[1]  # the largest codebook fits: only refinement can use more
        if refine:
            # small images search a long refinement path (its extra steps take minutes on large ones)
            steps = max(refine, BUDGET_REFINE_STEPS) if pixels <= BUDGET_SEARCH_MAX_PIXELS else refine

            def path(size: int) -> RefinementPath:
                return m.refinement_path(rows, grid, src.rgb, adapter, size, steps, positions)

            def grid_bits(indices: np.ndarray, size: int) -> int:
                if np.array_equal(indices, quantize(size)):  # a path's step 0: rate control's estimate
                    return estimated_bits(size)
                # refined grids are scored at their size's nearest-neighbour sharpness (no search of their own)
                return coder.estimate_bits(indices.reshape(grid), m.codebook(adapter, size),
                                           like=quantize(size).reshape(grid))

            def largest_fitting(below: int, section_bytes: int) -> int | None:
                try:
                    return choose_size(quantize, (m.size_range[0], below), section_bytes, describe, section_of,
                                       estimate).size
                except BudgetError:
                    return None

            size, indices, section, limited = _refine_under_budget(choice, path, budget, m.size_range, section_of,
                                                                   grid_bits, largest_fitting)
            stages.done("refinement search")
        used = (len(section) + overhead) * 8 / pixels
        if limited and used < UNUSED_BUDGET_SHARE * bpp:
            with_steps = f" with {steps} refinement steps" if steps else " (no refinement)"
            budget_unused = (f"--bpp {bpp:g} is more than model {m.name} can use for this image, so the budget "
                             f"is not used up: its largest codebook (K~={size}){with_steps} takes {used:.3f} bpp")
            notes.append(budget_unused)
        if m.residual is not None:
            # the residual stage competes with the base stage's own best (refined indices included)
            base_bits = 8.0 * len(section)
            candidates = [BaseCandidate(size, indices, base_bits, section)]
            candidates += [c for c in ladder_candidates(quantize, estimated_bits, m.size_range, budget)
                           if c.size != size]
            choice = residual_search(m, m.residual, padded, grid, candidates, budget, section_of)
            if choice is not None and choice.sections:
                size, indices, section = choice.size, choice.indices, choice.index_section
                refine_level, refinement_sections = choice.level, tuple(choice.sections)
                if budget_unused is not None:
                    notes.remove(budget_unused)
                    budget_unused = None
            stages.done("residual stage")
    del padded
    header = bitstream.Header(
        version=version, model_fingerprint=m.fingerprint_bytes, adapter=adapter,
        codebook_size=size, codebook_crc=codebook_crc(m.codebook(adapter, size)), width=src.width,
        height=src.height, mode=src.mode, bit_depth=src.bit_depth, has_alpha=bool(alpha),
        coder=coder.name, context_checksum=coder.checksum, refine_level=refine_level,
    )
    data = bitstream.pack(bitstream.Stream(header=header, indices_section=section, alpha_section=alpha,
                                           refinement_sections=refinement_sections))
    stages.done("container")
    return EncodeResult(data=data, width=src.width, height=src.height, codebook_size=size, adapter=adapter,
                        model=m.name, coder=coder.name, seconds=time.perf_counter() - started, notes=notes,
                        stages=stages.seconds, budget_unused=budget_unused)


# Under a budget, refinement and the codebook size compete for the same bytes: refined indices decode
# closer but are less predictable (5-50% more bits with the context model), and which buys more quality
# per byte differs from image to image. Measured at 0.2 bpp: kodim02 gains 0.6 dB by going from K~ = 262
# with 2 steps to K~ = 190 with 4; kodim20 loses with every step beyond 2. So the encoder searches both
# (``_refine_under_budget``), along refinement paths of up to BUDGET_REFINE_STEPS steps.
BUDGET_REFINE_STEPS = 8
SIZE_LADDER = 2**-0.25
# ...for images up to this size; larger ones search the steps asked for only (a refinement step takes
# about 1.3 us per pixel on a 2-core CPU, so half a dozen probes of 8 steps take about 2 minutes at 2 MP
# and most of an hour at 48 MP).
BUDGET_SEARCH_MAX_PIXELS = 1 << 21
# A budget the model cannot use is reported (``EncodeResult.budget_unused``) when the file takes less than
# this share of it: near the top of the model's range a file a few percent under is no news.
UNUSED_BUDGET_SHARE = 0.95
CONFIRM_TRIES = 3  # real encodes per size before its candidates are given up

RefinementPath = Iterator[tuple[np.ndarray, float]]  # a refinement path's (indices, MSE) per step, step 0 first


@dataclass(frozen=True)
class _Fit:
    """The closest step of one size's refinement path that fits, and what the next closer one costs."""

    error: float  # the float decoder's MSE
    size: int
    indices: np.ndarray
    section: bytes
    growth: int | None  # estimated bytes of the first closer step that does not fit, over nearest neighbour's


def _refine_under_budget(choice: RateChoice, path: Callable[[int], RefinementPath], budget: int,
                         size_range: tuple[int, int], section_of: SectionCoder,
                         estimate_bits: Callable[[np.ndarray, int], int],
                         largest_fitting: Callable[[int, int], int | None]) -> tuple[int, np.ndarray, bytes, bool]:
    """The refined grid that decodes closest among those whose section fits ``budget`` bytes, and whether
    the model rather than the budget was the limit (the largest size won with every step of its path).

    Probed sizes: ``choice.size`` (the largest whose nearest-neighbour grid fits); then the largest
    smaller size that leaves room for the bytes the first step that did not fit there would add
    (``largest_fitting(below, section_bytes)``); from there sizes SIZE_LADDER times smaller until one
    decodes no closer than the best so far; then halfway (in log size) between the best and each probed
    neighbour. The plain choice stands if nothing refined fits."""
    smallest = size_range[0]
    tried: dict[int, _Fit | None] = {}

    def probe(size: int) -> _Fit | None:
        if size not in tried:
            tried[size] = _best_fitting(path(size), size, budget, section_of, estimate_bits)
        return tried[size]

    def error(size: int) -> float:
        fit = tried.get(size)
        return fit.error if fit is not None else math.inf

    first = probe(choice.size)
    size = choice.size
    if first is not None and first.growth is not None and choice.size > smallest:
        size = largest_fitting(choice.size - 1, budget - first.growth) or choice.size
    best, targeted = error(choice.size), True
    while size != choice.size and probe(size) is not None:
        if error(size) >= best and not targeted:
            break  # a rung that decodes no closer (the targeted size always leads on to the ladder)
        best, targeted = min(best, error(size)), False
        smaller = max(smallest, round(size * SIZE_LADDER))
        if smaller >= size:
            break
        size = smaller
    ranked = sorted(tried)
    i = ranked.index(min(tried, key=error))
    for neighbour in ranked[max(0, i - 1) : i] + ranked[i + 1 : i + 2]:
        probe(round(math.sqrt(ranked[i] * neighbour)))  # halfway (in log size) to each neighbour
    top = tried[min(tried, key=error)]
    if top is None:
        return choice.size, choice.indices, choice.section, False
    return top.size, top.indices, top.section, top.size == size_range[1] and top.growth is None


def _best_fitting(path: RefinementPath, size: int, budget: int, section_of: SectionCoder,
                  estimate_bits: Callable[[np.ndarray, int], int]) -> _Fit | None:
    """The closest step of a refinement path whose section fits ``budget`` bytes, or None.

    Along the steps that improve on every earlier one the error falls and the bits mostly rise. The
    newest such step is estimated at steps 1, 2, 4, 8...; the path stops at the first that does not fit
    (the rest would not either, and computing them costs most of the search), the last fitting one
    between is found by bisection on the estimates (step 0, nearest neighbour, is taken to fit), and it
    is confirmed by real encodes, stepping back while it does not fit."""
    improving: list[tuple[np.ndarray, float]] = []
    bits: dict[int, int] = {}  # position in ``improving`` -> estimated bits

    def fits(j: int) -> bool:
        if j not in bits:
            bits[j] = estimate_bits(improving[j][0], size)
        return bits[j] <= 8 * budget

    for step, (indices, error) in enumerate(path):
        if not improving or error < improving[-1][1]:
            improving.append((indices, error))
        if step and step & (step - 1) == 0 and not fits(len(improving) - 1):
            break
    lo = max([0] + [j for j in bits if fits(j)])
    hi = min([j for j in bits if not fits(j)], default=len(improving))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    growth = (bits[hi] - estimate_bits(improving[0][0], size)) // 8 if hi in bits else None
    for j in range(lo, max(-1, lo - CONFIRM_TRIES), -1):
        indices, error = improving[j]
        section = section_of(indices, size)
        if len(section) <= budget:
            return _Fit(error, size, indices, section, growth)
    return None


def encode(image: ImageInput, *, bpp: float | None = None, codebook_size: int | None = None,
           model: ModelRef = None, adapter: str = "seq2seq", device: str | torch.device = "auto",
           refine: int = DEFAULT_REFINE_STEPS, entropy: str = "auto", max_tile_pixels: int | None = None) -> bytes:
    """Encode ``image`` (a path, image file bytes, a binary file object, a PIL image or an array) to
    ``.raq`` bytes.

    Exactly one of ``bpp`` (a budget on the whole file: bytes x 8 / pixels <= bpp) and ``codebook_size``
    (an explicit K~) is given. Raises ``imageio.ImageError`` for unreadable input,
    ``ratecontrol.BudgetError`` for a bad or unreachable budget or size, ``ModelFileError`` for a model
    that cannot be found, and ``CodecError`` for any other bad argument (``device``, ``adapter``,
    ``entropy``, ``refine``, ``max_tile_pixels``), an image too large for the format or a device that is
    not there. ``max_tile_pixels``: see ``encode_detailed``.
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


def _open(data: bytes, model: ModelRef, stages: _Stages | None = None) -> Decoded:
    stream = bitstream.unpack(data)
    h = stream.header
    if h.width * h.height > MAX_PIXELS:
        raise CodecError(f"stream declares {h.width}x{h.height} = {h.width * h.height} pixels, over the "
                         f"limit of {MAX_PIXELS}; refusing to decode it")
    candidates = [model] if isinstance(model, (str, os.PathLike)) else []
    m = model if isinstance(model, CodecModel) else registry.find_by_fingerprint(h.model_fingerprint, candidates)
    if stages is not None:
        stages.done("model")
    if not m.fingerprint_bytes == h.model_fingerprint:
        raise CodecError(f"stream was made with model {h.model_fingerprint.hex()}, not with {m.name}")
    refined = h.version >= bitstream.REFINED_VERSION
    if refined != (m.residual is not None):
        raise CodecError(f"a format {h.version} stream cannot come from model {m.name}, which "
                         f"{'has' if m.residual is not None else 'has no'} residual stage")
    if len(stream.refinement_sections) > GROUPS:
        raise CodecError(f"stream has {len(stream.refinement_sections)} residual sections, at most {GROUPS} exist")
    lo, hi = m.size_range
    if not lo <= h.codebook_size <= hi:
        raise CodecError(f"stream codebook size {h.codebook_size} is outside model {m.name}'s range {lo}..{hi}")
    book = m.codebook(h.adapter, h.codebook_size)
    if codebook_crc(book) != h.codebook_crc:
        why = ("cluster adapter codebooks are recomputed in floating point, and this machine computes a different "
               "one than the encoder did" if h.adapter == "cluster" else
               f"the stream's header is damaged, or model {m.name}'s file differs from the one that encoded it")
        raise CodecError(f"codebook checksum mismatch for {h.adapter} K~={h.codebook_size}: {why}")
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


def decode(data: StreamInput, *, model: ModelRef = None, device: str | torch.device = "auto",
           max_tile_pixels: int | None = None, stages: dict[str, float] | None = None) -> PIL.Image.Image:
    """Decode a ``.raq`` stream (bytes, a path or a binary file object) to a PIL image (mode L or RGB,
    plus alpha and 16-bit when the source had them).

    The stream names its model by fingerprint; installed models are searched (``model`` is tried first).
    Raises ``bitstream.FormatError`` / ``entropy.EntropyError`` for corrupt input, ``CodecError`` when the
    model is missing or disagrees or an argument is bad, ``ModelFileError`` when ``model`` cannot be found.
    ``max_tile_pixels``: images larger than this are synthesised in tiles of at most this many pixels
    (default $RAQCODEC_TILE_PIXELS or 2 MP); the pixels are the same. ``stages``: filled with the seconds
    of each stage.
    """
    try:
        budget = tiling.tile_pixels(max_tile_pixels)  # bad arguments are refused before any decoding work
    except ValueError as exc:
        raise CodecError(str(exc)) from None
    where = pick_device(device)
    timer = _Stages()
    dec = _open(bitstream.read_stream(data), model, timer)
    timer.done("entropy decoding")
    h = dec.stream.header
    dec.model.to(where)
    positions = tiling.tile_positions(budget, dec.model.config.downsampling)
    rgb = dec.model.synthesize(dec.indices.reshape(-1), dec.codebook, dec.indices.shape, positions)
    if h.refine_level is not None and dec.model.residual is not None:  # format 3 with residual sections
        stage = dec.model.residual
        base = pad_to_blocks(rgb)
        classes = stage.classes(base)
        symbols = stage.decode_groups(list(dec.stream.refinement_sections), classes, h.refine_level)
        rgb = stage.reconstruct(base, symbols, h.refine_level)
    rgb = imageio.crop(rgb, h.height, h.width)
    image = imageio.to_pil(rgb, h.mode, dec.alpha, h.bit_depth)
    timer.done("synthesis")
    if stages is not None:
        stages.update(timer.seconds)
    return image


def inspect(data: StreamInput, *, model: ModelRef = None) -> dict[str, Any]:
    """Header fields of a stream (bytes, a path or a binary file object) plus its VQ tokens: ``indices``
    (h x w int64) and ``codebook`` (K~ x d float32), the index section's size ``payload_bits`` and, for
    comparison, ``order0_entropy_bits``: the order-0 empirical entropy of the index grid times its size.

    A format 3 stream with residual sections adds its second stage: ``residual_symbols`` (blocks x 192
    int64, the quantized KLT coefficients of every 8x8 block in raster order, 0 in dropped sections),
    ``residual_step`` (pixel units), ``residual_basis`` (192 x 192 float64, rows are the coefficients'
    basis vectors) and ``residual_bits`` (the sections' payload). This decodes the base image."""
    data = bitstream.read_stream(data)
    dec = _open(data, model)
    h = dec.stream.header
    info = bitstream.summary(h, len(data))  # already unpacked and CRC-checked
    info.update(model=dec.model.name, payload_bits=8 * len(dec.stream.indices_section),
                order0_entropy_bits=empirical_entropy_bits(dec.indices, h.codebook_size),
                indices=dec.indices,
                codebook=(dec.codebook.float() * 2.0**-dec.model.act_frac_bits).numpy())
    stage = dec.model.residual
    if h.refine_level is not None and stage is not None:
        base = dec.model.synthesize(dec.indices.reshape(-1), dec.codebook, dec.indices.shape)
        classes = stage.classes(pad_to_blocks(base))
        info.update(residual_symbols=stage.decode_groups(list(dec.stream.refinement_sections), classes, h.refine_level),
                    residual_step=float(stage.steps[h.refine_level]) * 2.0**-RESIDUAL_STEP_BITS,
                    residual_basis=(stage.basis * 2.0**-RESIDUAL_BASIS_BITS).numpy(),
                    residual_bits=8 * sum(len(x) for x in dec.stream.refinement_sections))
    return info

