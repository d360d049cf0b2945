"""Encode an image to a ``.raq`` stream and back: the pipeline behind the API and the CLI.

image -> (io.images) 8-bit RGB, padded to multiples of 4 -> (model) latents -> (rate control / explicit K~)
index grid -> (entropy) rANS section -> (bitstream) container. Decoding reverses it with the exact decoder.
"""

from __future__ import annotations

import functools
import os
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import IO, Any

import numpy as np
import PIL.Image
import torch

from .entropy.coders import ContextCoder, IndexCoder, Order0Coder
from .entropy.order0 import empirical_entropy_bits
from .errors import CodecError, FormatError
from .eval.metrics import mse
from .eval.metrics import psnr as psnr_of
from .io import bitstream, images
from .model import registry, tiling
from .model.loaded import CodecModel, codebook_crc
from .model.residual import BASIS_BITS as RESIDUAL_BASIS_BITS
from .model.residual import STEP_BITS as RESIDUAL_STEP_BITS
from .model.residual import pad_to_blocks
from .options import (
    DEFAULT_EFFORT,
    DEVICE_TYPES,
    ENTROPY_CHOICES,
    MAX_EFFORT,
    check_codebook_size,
    check_encode_arguments,
)
from .ratecontrol.quality import fit_psnr
from .ratecontrol.search import EFFORTS, BudgetSession, SearchSettings, fit_budget, refinement_steps

ImageInput = images.ImageSource  # a path, image file bytes, a binary file object, a PIL image or an array
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
    effort: int | None = None  # the effort level (None: search settings given directly)
    psnr: float | None = None  # under a PSNR target: the file's decoded RGB PSNR

    @property
    def bpp(self) -> float:
        return len(self.data) * 8 / (self.width * self.height)


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" (CUDA when present), "cpu", "cuda" or "cuda:N" (or such a torch.device); CodecError otherwise."""
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
    """Wall time per stage of one encode or decode (``raqcodec encode -v`` prints them), and the stage
    now running for a ``progress`` callback: ``start(name)`` announces a stage (once: announcing the one
    running again says nothing), ``done(name)`` times the stage that ends and announces ``after[name]``,
    the stage expected next, when there is one."""

    def __init__(self, progress: Callable[[str], None] | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()
        self._progress = progress
        self._running: str | None = None
        self.after: dict[str, str] = {}

    def start(self, name: str) -> None:
        if self._progress is not None and name != self._running:
            self._running = name
            self._progress(name)

    def done(self, name: str, then: str | None = None) -> None:
        """Times ``name`` (a stage may run in parts: its times add up) and announces ``then``, or else the
        stage planned after it."""
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now
        self._running = None
        following = then if then is not None else self.after.get(name)
        if following is not None:
            self.start(following)


def _search_stages(
    m: CodecModel, coder: IndexCoder, settings: SearchSettings, refine: int | None, pixels: int, layered: bool
) -> list[str]:
    """The stages of a budget search (``fit_budget``) in order, as far as they can be told before it runs:
    it may still skip the rate-constrained choice (when the largest codebook fits already) and the
    residual stage (settings that do not search it run it only when the largest codebook fits)."""
    stages = ["rate control"]
    if refinement_steps(refine, settings, searched=pixels <= settings.max_pixels):
        stages.append("refinement search")
    # with a residual search, its stage ranks candidates first and announces the rate-constrained choice
    # when it runs one (``fit_budget``'s ``done``)
    searched = m.residual is not None and (settings.residual_search or layered)
    if settings.rate_constrained and isinstance(coder, ContextCoder) and pixels <= settings.max_pixels and not searched:
        stages.append("rate-constrained choice")
    if m.residual is not None:
        stages.append("residual stage")
    return stages


def _model(ref: ModelRef, device: str | torch.device) -> CodecModel:
    model = ref if isinstance(ref, CodecModel) else registry.load(ref)
    return model.on(pick_device(device))


def index_coder(
    model: CodecModel,
    entropy: str = "auto",
    estimate_positions: int | None = None,
    estimate_sharpness: int | None = None,
) -> IndexCoder:
    """The index coder for ``entropy``: "context" (the model's context model), "order0", or "auto"
    (context when the model has one). ``estimate_positions``: the most positions a size estimate of the
    context coder scores (None: its schedule's); ``estimate_sharpness``: the sharpness they score at
    (None: searched per grid; ``ContextCoder``). Estimates steer the encoder only, never a coded bit."""
    if entropy not in ENTROPY_CHOICES:
        raise CodecError(f"entropy must be one of {', '.join(ENTROPY_CHOICES)}, got {entropy!r}")
    if entropy == "order0" or (entropy == "auto" and model.context is None):
        return Order0Coder()
    if model.context is None:
        raise CodecError(f"model {model.name} has no context model; use the order0 entropy coder")
    context = model.context
    if estimate_positions is not None:
        context = context.with_schedule(
            replace(
                context.schedule,
                sampled_positions=estimate_positions,
                sharpness_positions=max(1, estimate_positions // 4),
            )
        )
    return ContextCoder(context, estimate_sharpness)


def encode_detailed(
    image: ImageInput,
    *,
    bpp: float | None = None,
    codebook_size: int | None = None,
    model: ModelRef = None,
    adapter: str = "seq2seq",
    device: str | torch.device = "auto",
    refine: int | None = None,
    entropy: str = "auto",
    max_tile_pixels: int | None = None,
    effort: int | None = None,
    psnr: float | None = None,
    layers: Sequence[float] | None = None,
    search: SearchSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> EncodeResult:
    """Encode at a bitrate budget (``bpp``: all file bytes x 8 / pixels), at an explicit ``codebook_size``
    or to a quality target (``psnr``: the smallest file found whose decoded RGB PSNR reaches it).

    ``effort``: 0..MAX_EFFORT (default DEFAULT_EFFORT), how far the encoder searches for the closest
    image under a budget (``raqcodec.ratecontrol.search.EFFORTS``; ``search`` gives such settings
    directly). ``refine``: steps of decoder-aware index refinement (``raqcodec.model.refine``; 0 = none),
    overriding the effort's: the longest refinement path searched under a budget, the steps taken at an
    explicit size (None: the effort's; at most DEFAULT_REFINE_STEPS at an explicit size and on images over
    the search's ``max_pixels``). ``entropy``: the index coder (``index_coder``). ``max_tile_pixels``:
    images larger than this run the networks in tiles of at most this many pixels
    (``raqcodec.model.tiling``; default $RAQCODEC_TILE_PIXELS or 2 MP): memory stays bounded, the stream
    format is the same. ``layers``: with ``bpp``, up to 3 smaller budgets (ascending) that the file can
    be trimmed to (``raqcodec.trim``) at the quality of an encode at that budget: the base stage and a
    first residual layer are chosen for the first, and each further budget adds a residual layer coding
    what the earlier ones left (a model with a residual stage only).

    ``progress(stage)`` is called as each stage starts, with the stage's name ("model", "read",
    "analysis", then under a budget "rate control", "refinement search", "rate-constrained choice",
    "residual stage", under a PSNR target each try's and "quality check", at an explicit size
    "quantization" or "refinement" and "entropy coding", and last "container"): the names of
    ``EncodeResult.stages``. Inside the budget search a stage is announced when the one before it ends,
    as the settings call for it; the search may then skip it (the rate-constrained choice when the
    largest codebook fits already): ``stages`` lists what ran, in the order announced.
    """
    check_encode_arguments(bpp, codebook_size, adapter, refine, entropy, effort, psnr, layers)
    try:
        tiling.tile_pixels(max_tile_pixels)
    except ValueError as exc:
        raise CodecError(str(exc)) from None
    settings = search if search is not None else EFFORTS[DEFAULT_EFFORT if effort is None else effort]
    started = time.perf_counter()
    stages = _Stages(progress)
    stages.after.update({"model": "read", "read": "analysis"})
    stages.start("model")
    m = _model(model, device)
    coder = index_coder(m, entropy, settings.estimate_positions, settings.estimate_sharpness)
    positions = tiling.tile_positions(max_tile_pixels, m.config.downsampling)
    stages.done("model")
    src = images.load_image(image)
    if max(src.width, src.height) > MAX_SIDE:
        raise CodecError(
            f"{src.width}x{src.height} is too large: .raq version {bitstream.FORMAT_VERSION} "
            f"stores sides up to {MAX_SIDE} pixels"
        )
    stages.done("read")
    padded = images.pad_to_multiple(src.rgb, m.config.downsampling)
    grid = (padded.shape[0] // m.config.downsampling, padded.shape[1] // m.config.downsampling)
    session = BudgetSession(
        model=m,
        coder=coder,
        rows=m.analyse(padded, positions, fast=True),
        grid=grid,
        rgb=src.rgb,
        padded=padded,
        adapter=adapter,
        positions=positions,
    )
    del padded
    steps = refinement_steps(refine, settings, searched=False) if codebook_size is not None else 0  # at -k
    if codebook_size is not None:
        plan = ["refinement" if steps else "quantization", "entropy coding"]
    else:
        plan = _search_stages(m, coder, settings, refine, src.width * src.height, bool(layers))
        if bpp is None:
            plan.append("quality check")  # the next try announces its own start; the last, "container"
    if bpp is not None or codebook_size is not None:
        plan.append("container")
    stages.after.update(zip(["analysis", *plan], plan, strict=False))
    stages.done("analysis")
    notes = list(src.notes)
    alpha = zlib.compress(src.alpha.tobytes(), 9) if src.alpha is not None else b""
    # format 3 for a model with a residual stage (its base-only streams too), 2 otherwise
    version = bitstream.REFINED_VERSION if m.residual is not None else bitstream.FORMAT_VERSION
    budget_unused = None
    reached: float | None = None
    overhead = bitstream.header_size(version) + 4 + len(alpha)

    def container(size: int, section: bytes, layers: tuple[bitstream.Layer, ...], sections: tuple[bytes, ...]) -> bytes:
        header = bitstream.Header(
            version=version,
            model_fingerprint=m.fingerprint_bytes,
            adapter=adapter,
            codebook_size=size,
            codebook_crc=codebook_crc(m.codebook(adapter, size)),
            width=src.width,
            height=src.height,
            mode=src.mode,
            bit_depth=src.bit_depth,
            has_alpha=bool(alpha),
            coder=coder.name,
            context_checksum=coder.checksum,
            layers=layers,
        )
        stream = bitstream.Stream(
            header=header, indices_section=section, alpha_section=alpha, refinement_sections=sections
        )
        return bitstream.pack(stream)

    if codebook_size is not None:
        check_codebook_size(codebook_size, m.size_range, m.name)
        size = int(codebook_size)
        indices = session.refined(size, steps) if steps else session.quantize(size)
        stages.done("refinement" if steps else "quantization")
        data = container(size, session.section(indices, size), (), ())
        stages.done("entropy coding")
    else:

        def at_budget(
            budget_bpp: float, at: BudgetSession = session, how: SearchSettings = settings
        ) -> tuple[bytes, int, list[str], str | None]:
            fit = fit_budget(at, budget_bpp, overhead, refine, how, stages.done, layers or ())
            stages.start("container" if bpp is not None else "quality check")  # whatever the search skipped
            assert fit.section is not None  # fit_budget codes whatever it chose
            stream = container(fit.size, fit.section, fit.layers, fit.refinement_sections)
            return stream, fit.size, fit.notes, fit.budget_unused

        if bpp is not None:
            data, size, fit_notes, budget_unused = at_budget(bpp)
            notes += fit_notes
        else:
            assert psnr is not None
            sizes: dict[bytes, int] = {}

            def encode_at(
                budget_bpp: float, at: BudgetSession = session, how: SearchSettings = settings
            ) -> tuple[bytes, float]:
                stages.start("rate control")
                stream, sizes[stream], _, _ = at_budget(budget_bpp, at, how)
                _, decoded = _decode_rgb(stream, m, m.device, tiling.tile_pixels(max_tile_pixels), _Stages())
                stages.done("quality check")
                return stream, psnr_of(mse(decoded, src.rgb))

            # where an effort level's quality search oversteps the target, the next level tries below it
            level = DEFAULT_EFFORT if effort is None else effort
            closer = None
            if search is None and level < MAX_EFFORT:
                how = EFFORTS[level + 1]
                coder_there = index_coder(m, entropy, how.estimate_positions, how.estimate_sharpness)
                at = replace(session, coder=coder_there, _estimates={}, _sections={})
                closer = functools.partial(encode_at, at=at, how=how)

            def describe(lowest: float, highest: float) -> str:
                return (
                    f"PSNR {psnr:g} dB is above what model {m.name} reaches for this image: "
                    f"{lowest:.2f} to {highest:.2f} dB (smallest file tried to the largest)"
                )

            best = fit_psnr(encode_at, psnr, describe, closer)
            data, size, reached = best.data, sizes[best.data], best.psnr
            stages.start("container")
    stages.done("container")
    return EncodeResult(
        data=data,
        width=src.width,
        height=src.height,
        codebook_size=size,
        adapter=adapter,
        model=m.name,
        coder=coder.name,
        seconds=time.perf_counter() - started,
        notes=notes,
        stages=stages.seconds,
        budget_unused=budget_unused,
        effort=None if search is not None else DEFAULT_EFFORT if effort is None else effort,
        psnr=reached,
    )


def encode(
    image: ImageInput,
    *,
    bpp: float | None = None,
    codebook_size: int | None = None,
    model: ModelRef = None,
    adapter: str = "seq2seq",
    device: str | torch.device = "auto",
    refine: int | None = None,
    entropy: str = "auto",
    max_tile_pixels: int | None = None,
    effort: int | None = None,
    psnr: float | None = None,
    layers: Sequence[float] | None = None,
) -> bytes:
    """Encode ``image`` (a path, image file bytes, a binary file object, a PIL image or an array) to
    ``.raq`` bytes.

    Exactly one of ``bpp`` (a budget on the whole file: bytes x 8 / pixels <= bpp), ``codebook_size``
    (an explicit K~) and ``psnr`` (a quality target in dB) is given; ``effort`` (0..3) trades encode
    time for quality. Raises ``ImageError`` for unreadable input,
    ``BudgetError`` for a bad or unreachable budget, size or PSNR target, ``ModelFileError`` for a model
    that cannot be found, and ``CodecError`` for any other bad argument (``device``, ``adapter``,
    ``entropy``, ``refine``, ``effort``, ``max_tile_pixels``), an image too large for the format or a device that is
    not there. ``max_tile_pixels``: see ``encode_detailed``.
    """
    return encode_detailed(
        image,
        bpp=bpp,
        codebook_size=codebook_size,
        model=model,
        adapter=adapter,
        device=device,
        refine=refine,
        entropy=entropy,
        max_tile_pixels=max_tile_pixels,
        effort=effort,
        psnr=psnr,
        layers=layers,
    ).data


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
        raise CodecError(
            f"stream declares {h.width}x{h.height} = {h.width * h.height} pixels, over the "
            f"limit of {MAX_PIXELS}; refusing to decode it"
        )
    candidates = [model] if isinstance(model, (str, os.PathLike)) else []
    m = model if isinstance(model, CodecModel) else registry.find_by_fingerprint(h.model_fingerprint, candidates)
    if stages is not None:
        stages.done("model")
    if not m.fingerprint_bytes == h.model_fingerprint:
        raise CodecError(f"stream was made with model {h.model_fingerprint.hex()}, not with {m.name}")
    refined = h.version >= bitstream.REFINED_VERSION
    if refined != (m.residual is not None):
        raise CodecError(
            f"a format {h.version} stream cannot come from model {m.name}, which "
            f"{'has' if m.residual is not None else 'has no'} residual stage"
        )
    if len(h.layers) > 1 and (m.residual is None or m.residual.layer_caps is None):
        raise CodecError(f"stream has {len(h.layers)} residual layers; model {m.name} codes one")
    if any(finer.level <= coarser.level for coarser, finer in zip(h.layers, h.layers[1:])):
        raise CodecError("corrupt .raq file: a residual layer is not finer than the one before")
    lo, hi = m.size_range
    if not lo <= h.codebook_size <= hi:
        raise CodecError(f"stream codebook size {h.codebook_size} is outside model {m.name}'s range {lo}..{hi}")
    book = m.codebook(h.adapter, h.codebook_size)
    if codebook_crc(book) != h.codebook_crc:
        why = (
            "cluster adapter codebooks are recomputed in floating point, and this machine computes a different "
            "one than the encoder did"
            if h.adapter == "cluster"
            else f"the stream's header is damaged, or model {m.name}'s file differs from the one that encoded it"
        )
        raise CodecError(f"codebook checksum mismatch for {h.adapter} K~={h.codebook_size}: {why}")
    f = m.config.downsampling  # pixels per index along each axis
    grid = ((h.height + f - 1) // f, (h.width + f - 1) // f)
    indices = _stream_coder(m, h).decode(stream.indices_section, grid, book)
    return Decoded(
        stream=stream, model=m, indices=indices, codebook=book, alpha=_inflate_alpha(stream) if h.has_alpha else None
    )


def _stream_coder(m: CodecModel, h: bitstream.Header) -> IndexCoder:
    """The index coder a stream names, after checking this model has the same context model."""
    if h.coder == "order0":
        return Order0Coder()
    if m.context is None:
        raise CodecError(
            f"stream was coded with a context model (checksum {h.context_checksum:08x}), but model {m.name} has none"
        )
    if m.context.checksum != h.context_checksum:
        raise CodecError(
            f"context model checksum mismatch: the stream needs {h.context_checksum:08x}, "
            f"model {m.name} has {m.context.checksum:08x}"
        )
    return ContextCoder(m.context)


def _inflate_alpha(stream: bitstream.Stream) -> np.ndarray:
    """The alpha plane, inflated to at most width x height bytes (a deflate bomb stops there)."""
    h = stream.header
    expected = h.width * h.height
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(stream.alpha_section, expected + 1)
    except zlib.error:
        raise FormatError("corrupt .raq file: alpha section does not inflate") from None
    if len(raw) != expected or not inflater.eof:
        raise FormatError("corrupt .raq file: alpha section has the wrong size")
    return np.frombuffer(raw, dtype=np.uint8).reshape(h.height, h.width)


def decode(
    data: StreamInput,
    *,
    model: ModelRef = None,
    device: str | torch.device = "auto",
    max_tile_pixels: int | None = None,
    stages: dict[str, float] | None = None,
) -> PIL.Image.Image:
    """Decode a ``.raq`` stream (bytes, a path or a binary file object) to a PIL image (mode L or RGB,
    plus alpha and 16-bit when the source had them).

    The stream names its model by fingerprint; installed models are searched (``model`` is tried first).
    Raises ``FormatError`` / ``EntropyError`` for corrupt input, ``CodecError`` when the
    model is missing or disagrees or an argument is bad, ``ModelFileError`` when ``model`` cannot be found.
    ``max_tile_pixels``: images larger than this are synthesised in tiles of at most this many pixels
    (default $RAQCODEC_TILE_PIXELS or 2 MP); the pixels are the same. ``stages``: filled with the seconds
    of each stage.
    """
    try:
        budget = tiling.tile_pixels(max_tile_pixels)  # bad arguments are refused before any decoding work
    except ValueError as exc:
        raise CodecError(str(exc)) from None
    timer = _Stages()
    dec, rgb = _decode_rgb(bitstream.read_stream(data), model, pick_device(device), budget, timer)
    h = dec.stream.header
    image = images.to_pil(rgb, h.mode, dec.alpha, h.bit_depth)
    timer.done("synthesis")
    if stages is not None:
        stages.update(timer.seconds)
    return image


def _decode_rgb(
    data: bytes, model: ModelRef, where: torch.device, tile_pixels: int | None, timer: _Stages
) -> tuple[Decoded, np.ndarray]:
    """The stream opened and its 8-bit RGB pixels (H, W, 3), before alpha and bit depth are restored."""
    dec = _open(data, model, timer)
    timer.done("entropy decoding")
    h = dec.stream.header
    m = dec.model.on(where)  # the shared model itself stays where it is
    positions = tiling.tile_positions(tile_pixels, m.config.downsampling)
    rgb = m.synthesize(dec.indices.reshape(-1), dec.codebook, dec.indices.shape, positions)
    if h.layers and m.residual is not None:  # format 3 with residual layers
        stage = m.residual
        base = pad_to_blocks(rgb)
        coded, _ = stage.decode_layers(list(dec.stream.refinement_sections), h.layers, stage.classes(base))
        rgb = stage.reconstruct_values(base, coded.values)
    return dec, images.crop(rgb, h.height, h.width)


def inspect(data: StreamInput, *, model: ModelRef = None) -> dict[str, Any]:
    """Header fields of a stream (bytes, a path or a binary file object) plus its VQ tokens: ``indices``
    (h x w int64) and ``codebook`` (K~ x d float32), the index section's size ``payload_bits`` and, for
    comparison, ``order0_entropy_bits``: the order-0 empirical entropy of the index grid times its size.

    A format 3 stream with residual layers adds its second stage: ``residual_layers``, one dict per layer,
    coarsest first, with its ``level``, ``step`` (pixel units), ``groups`` and ``symbols`` (blocks x 192
    int64, the quantized KLT coefficients of every 8x8 block in raster order, 0 in groups it does not
    code); ``residual_coefficients`` (blocks x 192 float64, every layer's dequantized sum in pixel units:
    what the decoder transforms back), ``residual_basis`` (192 x 192 float64, rows are the coefficients'
    basis vectors) and ``residual_bits`` (the sections' payload). This decodes the base image."""
    data = bitstream.read_stream(data)
    dec = _open(data, model)
    h = dec.stream.header
    info = bitstream.summary(h, len(data))  # already unpacked and CRC-checked
    info.update(
        model=dec.model.name,
        payload_bits=8 * len(dec.stream.indices_section),
        order0_entropy_bits=empirical_entropy_bits(dec.indices, h.codebook_size),
        indices=dec.indices,
        codebook=(dec.codebook.float() * 2.0**-dec.model.act_frac_bits).numpy(),
    )
    stage = dec.model.residual
    if h.layers and stage is not None:
        base = dec.model.synthesize(dec.indices.reshape(-1), dec.codebook, dec.indices.shape)
        classes = stage.classes(pad_to_blocks(base))
        coded, symbols = stage.decode_layers(list(dec.stream.refinement_sections), h.layers, classes)
        info.update(
            residual_layers=[
                {
                    "level": layer.level,
                    "step": float(stage.steps[layer.level]) * 2.0**-RESIDUAL_STEP_BITS,
                    "groups": layer.groups,
                    "symbols": layer_symbols,
                }
                for layer, layer_symbols in zip(h.layers, symbols, strict=True)
            ],
            residual_coefficients=coded.values * 2.0**-RESIDUAL_STEP_BITS,
            residual_basis=(stage.basis * 2.0**-RESIDUAL_BASIS_BITS).numpy(),
            residual_bits=8 * sum(len(x) for x in dec.stream.refinement_sections),
        )
    return info
