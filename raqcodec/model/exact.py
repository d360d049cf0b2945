"""Bit-exact decoder: the trained float decoder evaluated in fixed-point integer arithmetic.

Why: a ``.raq`` file must decode to the same pixels on every machine and device. Float convolutions differ
in their last bits between CPUs, BLAS libraries and GPUs, and a last-bit difference can flip a pixel's
rounding. Here every activation is an integer at a fixed scale of 2^-F (F = ``act_frac_bits``) and every
weight an integer at a per-layer scale 2^-s.

Exactness argument: tensors are float64 holding integers. A convolution is computed as matrix products
over views of the input (no arithmetic in the data movement); with |activation| <= 2^21 (inputs are
clamped too), |weight| <= 2^15, at most 2^13 terms per dot product and |bias| <= 2^51 (all checked in
``ExactConv``), every product and every partial sum is an integer below 2^49 + 2^51 < 2^53, so it is
represented exactly and the result is the same in any summation order, with or without FMA, on any
BLAS or GPU. The first layer sums looked-up products of codewords instead (``StemTable``): the same
integers. Rescaling multiplies by powers of two (exact) and rounds with ``floor``
(exact); ReLU, addition of integers, clamping and pixel shuffle are exact too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.autoencoder import PIXEL_OFFSET, Decoder

ACT_LIMIT = 2**21  # activations are clamped (saturated) to +-ACT_LIMIT after every layer
ACT_TARGET = 2**19  # calibration puts the largest observed activation at or below this
WEIGHT_LIMIT = 2**15 - 1
MAX_TERMS = 2**13
BIAS_LIMIT = 2**51
# Accumulator elements per run of rows (2 MiB of float64): small enough to stay in cache while nine taps
# add into it (on a 768x512 image the decoder took 237 ms with 2^23, 207 ms with 2^17-2^18).
ROW_CHUNK_ELEMENTS = 2**18


def weight_frac_bits(weight: Tensor) -> int:
    """Largest s <= 30 with max |round(w * 2^s)| <= WEIGHT_LIMIT (exact power-of-two search)."""
    peak = float(weight.detach().abs().max().double())
    s = 30
    while s > -30 and round(peak * 2.0**s) > WEIGHT_LIMIT:
        s -= 1
    return s


def quantize_tensor(value: Tensor, frac_bits: int) -> Tensor:
    """Integer-valued float64 tensor round(value * 2^frac_bits): float32 -> float64 and x 2^s are exact."""
    return torch.round(value.detach().to(torch.float64) * 2.0**frac_bits)


class ExactConv:
    """A conv layer (kernel 1 or 3, stride 1, 'same' padding) on integer activations at scale 2^-F.

    A 3x3 convolution is nine 1x1 convolutions of shifted inputs. On the zero-padded image flattened
    row by row (row length w + 2), the input of tap (dy, dx) for output q = i * (w + 2) + j is element
    q + dy * (w + 2) + dx: a contiguous slice. So each tap is one matrix product over a view, with no
    im2col copy; the two junk columns per row that this computes are dropped (or zeroed) by the caller.
    """

    def __init__(self, conv: nn.Conv2d, act_frac_bits: int, weight_bits: int) -> None:
        k = conv.kernel_size[0]
        if conv.kernel_size != (k, k) or k not in (1, 3) or conv.stride != (1, 1) or conv.padding != (k // 2, k // 2):
            raise ValueError("exact decoder supports stride-1 'same' convolutions with kernel 1 or 3 only")
        terms = conv.in_channels * k * k
        if terms > MAX_TERMS:
            raise ValueError(f"{terms} terms per output exceed the exactness bound {MAX_TERMS}")
        self.kernel, self.shift = k, weight_bits
        weight = quantize_tensor(conv.weight, weight_bits)
        if float(weight.abs().max()) > WEIGHT_LIMIT:
            raise ValueError(f"weight scale 2^-{weight_bits} puts weights above {WEIGHT_LIMIT}")
        self.taps = [weight[:, :, dy, dx].contiguous() for dy in range(k) for dx in range(k)]
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        self.bias = quantize_tensor(bias, act_frac_bits + weight_bits)[:, None]
        if float(self.bias.abs().max()) > BIAS_LIMIT:
            raise ValueError(f"bias at scale 2^-{act_frac_bits + weight_bits} exceeds {BIAS_LIMIT}")

    @property
    def out_channels(self) -> int:
        return self.taps[0].shape[0]

    def to(self, device: torch.device) -> ExactConv:
        self.taps = [t.to(device) for t in self.taps]
        self.bias = self.bias.to(device)
        return self

    def outputs(self, src: Tensor, start: int, count: int, row: int) -> Tensor:
        """Rescaled outputs start..start + count - 1, (C_out, count). 3x3: ``src`` is the zero-padded
        input flattened (C_in, (h + 3) * row), outputs in the unpadded layout with junk columns; 1x1:
        ``src`` is the input flattened, outputs in its layout."""
        if self.kernel == 1:
            return rescale(torch.addmm(self.bias, self.taps[0], src[:, start : start + count]), self.shift)
        acc = self.bias.expand(-1, count).clone()
        for tap, (dy, dx) in zip(self.taps, ((dy, dx) for dy in range(3) for dx in range(3))):
            off = start + dy * row + dx
            acc.addmm_(tap, src[:, off : off + count])  # exact: integers < 2^53
        return rescale(acc, self.shift)

    def __call__(self, x: Tensor) -> Tensor:
        """x: (C, H, W) integer-valued float64 -> (C_out, H, W) at the same scale, saturated. (One layer
        on its own; ``ExactDecoder`` chains ``outputs`` on padded buffers instead.)"""
        c, h, w = x.shape
        if self.kernel == 1:
            return self.outputs(x.reshape(c, -1), 0, h * w, w).reshape(-1, h, w)
        row = w + 2
        padded = F.pad(x, (1, 1, 1, 2)).reshape(c, -1)  # one extra bottom row keeps every tap slice in range
        out = torch.empty(self.out_channels, h, w, dtype=torch.float64, device=x.device)
        for top, bottom in row_chunks(h, row, self.out_channels):
            rows = self.outputs(padded, top * row, (bottom - top) * row, row).view(-1, bottom - top, row)
            out[:, top:bottom] = rows[:, :, :w]
        return out


def row_chunks(h: int, row: int, channels: int, elements: int = ROW_CHUNK_ELEMENTS) -> list[tuple[int, int]]:
    """Output rows in runs whose accumulators of ``channels`` hold about ``elements`` values (how the rows
    are cut changes no bit: each output depends on its own inputs only)."""
    rows = max(1, elements // max(1, channels * row))
    return [(top, min(h, top + rows)) for top in range(0, h, rows)]


def rescale(acc: Tensor, shift: int) -> Tensor:
    """round(acc / 2^shift) with ties up, then saturate, in place: exact for integer-valued float64."""
    return acc.mul_(2.0**-shift).add_(0.5).floor_().clamp_(-ACT_LIMIT, ACT_LIMIT)


@dataclass
class ExactBlock:
    """x + conv1(relu(conv3(relu(x)))), saturated."""

    conv3: ExactConv
    conv1: ExactConv


class StemTable:
    """The decoder's first layer, a 3x3 convolution of the codewords, as sums of looked-up products.

    The stem's input is a grid of codewords, so each tap's contribution W_tap @ c_k is computed once per
    codeword in use and each output is the bias plus nine looked-up rows: the same integers as the
    convolution (products below 2^36, 64-term sums below 2^42, nine of those plus the bias below 2^53),
    hence bit-identical, for at most as many multiplications (never more codewords than positions) and,
    on a 768x512 image at K~ = 1024, a third of the time (21 ms instead of 65 ms).
    """

    def __init__(self, conv: ExactConv) -> None:
        if conv.kernel != 3:
            raise ValueError("the stem table needs a 3x3 stem")
        self.shift = conv.shift
        # (9, d, C_out): tap (dy, dx) at 3 * dy + dx, transposed for products with codewords as rows
        self.taps = torch.stack([t.t() for t in conv.taps]).contiguous()
        self.bias = conv.bias.t().contiguous()  # (1, C_out)

    @property
    def out_channels(self) -> int:
        return self.taps.shape[2]

    def to(self, device: torch.device) -> StemTable:
        self.taps, self.bias = self.taps.to(device), self.bias.to(device)
        return self

    def __call__(self, codebook: Tensor, indices: Tensor) -> Tensor:
        """codebook (K, d) integer-valued float64, indices (h, w) int64 -> (C_out, h, w), as the stem
        convolution of the latent grid codebook[indices] (zero outside the grid)."""
        h, w = indices.shape
        used, grid = torch.unique(indices, return_inverse=True)
        book = codebook[used].clamp(-ACT_LIMIT, ACT_LIMIT)
        n = len(used)
        zero = torch.zeros(9, 1, self.taps.shape[2], dtype=torch.float64, device=book.device)
        # rows t * (n + 1) + u: tap t of codeword u; row t * (n + 1) + n is zero (outside the grid)
        table = torch.cat([torch.matmul(book, self.taps), zero], 1).view(-1, self.taps.shape[2])
        padded = F.pad(grid.view(h, w), (1, 1, 1, 1), value=n)
        rows = torch.stack(
            [padded[dy : dy + h, dx : dx + w] + (3 * dy + dx) * (n + 1) for dy in range(3) for dx in range(3)], -1
        ).view(-1, 9)
        acc = F.embedding_bag(rows, table, mode="sum").add_(self.bias)
        return rescale(acc, self.shift).t().reshape(-1, h, w)


class ExactDecoder:
    """Integer twin of ``raqcodec.nn.autoencoder.Decoder``: an index grid into a codebook of integer
    latents at scale 2^-F -> uint8 pixels."""

    def __init__(
        self,
        decoder: Decoder,
        act_frac_bits: int,
        weight_bits: dict[str, int],
        row_chunk_elements: int = ROW_CHUNK_ELEMENTS,
    ) -> None:
        self.frac_bits = act_frac_bits
        self.row_chunk_elements = row_chunk_elements  # accumulator values per run of rows (``row_chunks``)

        def conv(name: str, layer: nn.Conv2d) -> ExactConv:
            return ExactConv(layer, act_frac_bits, weight_bits[name])

        self.stem = StemTable(conv("stem", decoder.stem))
        self.blocks = [
            ExactBlock(conv(f"blocks.{i}.conv3", b.conv3), conv(f"blocks.{i}.conv1", b.conv1))
            for i, b in enumerate(decoder.residual_blocks())
        ]
        self.head = conv("head", decoder.head)
        self.factor = decoder.shuffle.upscale_factor

    def to(self, device: torch.device) -> ExactDecoder:
        layers: list[StemTable | ExactConv] = [
            self.stem,
            self.head,
            *[c for b in self.blocks for c in (b.conv3, b.conv1)],
        ]
        for layer in layers:
            layer.to(device)
        return self

    @torch.no_grad()
    def __call__(self, codebook: Tensor, indices: Tensor) -> Tensor:
        """codebook (K, d) integer-valued float64, indices (h, w) int64 -> (3, 4h, 4w) uint8.

        The activations live in one zero-padded buffer (``ExactConv``'s layout), updated in place, and
        every layer runs in runs of rows whose accumulators stay in cache: no padding copies, and the
        residual block's two layers run back to back on each run."""
        h, w = indices.shape
        row = w + 2
        x = torch.zeros(self.stem.out_channels, (h + 3) * row, dtype=torch.float64, device=codebook.device)
        padded = x.view(-1, h + 3, row)
        padded[:, 1 : h + 1, 1 : w + 1] = self.stem(codebook, indices)
        # output q (row i, column j < w + 2) of a 3x3 layer over x belongs at q + row + 1 of x; j = w, w + 1
        # are junk and land on the border, which is zeroed again after each block
        inner = x[:, row + 1 : row + 1 + h * row]
        relu = torch.empty_like(x)
        for block in self.blocks:
            torch.clamp(x, min=0, out=relu)  # the block reads the old x while it updates x in place
            channels = max(block.conv3.out_channels, block.conv1.out_channels)
            for top, bottom in row_chunks(h, row, channels, self.row_chunk_elements):
                lo, n = top * row, (bottom - top) * row
                hidden = block.conv3.outputs(relu, lo, n, row).clamp_(min=0)
                inner[:, lo : lo + n].add_(block.conv1.outputs(hidden, 0, n, row)).clamp_(-ACT_LIMIT, ACT_LIMIT)
            padded[:, 1 : h + 1, w + 1] = 0
            padded[:, 2 : h + 2, 0] = 0
        torch.clamp(x, min=0, out=relu)
        y = torch.empty(self.head.out_channels, h, w, dtype=torch.float64, device=x.device)
        for top, bottom in row_chunks(h, row, self.head.out_channels, self.row_chunk_elements):
            out = self.head.outputs(relu, top * row, (bottom - top) * row, row)
            y[:, top:bottom] = out.view(-1, bottom - top, row)[:, :, :w]
        y = F.pixel_shuffle(y[None], self.factor)[0]
        # pixel = round(255 * (y / 2^F + offset)): y*255 is an exact integer, the rest power-of-two scaling.
        pixels = torch.floor((y * 255.0) * 2.0**-self.frac_bits + (255.0 * PIXEL_OFFSET + 0.5))
        return pixels.clamp_(0, 255).to(torch.uint8)


def decoder_weight_bits(decoder: Decoder) -> dict[str, int]:
    """Per-layer weight scales of a float decoder (frozen into the checkpoint at export)."""
    bits = {"stem": weight_frac_bits(decoder.stem.weight), "head": weight_frac_bits(decoder.head.weight)}
    for i, block in enumerate(decoder.residual_blocks()):
        bits[f"blocks.{i}.conv3"] = weight_frac_bits(block.conv3.weight)
        bits[f"blocks.{i}.conv1"] = weight_frac_bits(block.conv1.weight)
    return bits


@torch.no_grad()
def calibrate_act_frac_bits(decoder: Decoder, latents: Tensor) -> int:
    """Largest F with every intermediate activation of ``decoder`` on ``latents`` below ACT_TARGET / 2^F."""
    peak = [latents.abs().max()]
    x = decoder.stem(latents)
    peak.append(x.abs().max())
    for block in decoder.residual_blocks():
        inner = block.conv3(torch.relu(x))
        peak.append(inner.abs().max())
        x = x + block.conv1(torch.relu(inner))
        peak.append(x.abs().max())
    peak.append(decoder.head(torch.relu(x)).abs().max())
    largest = float(torch.stack(peak).max())
    f = 24
    while f > 0 and largest * 2.0**f > ACT_TARGET:
        f -= 1
    return f
