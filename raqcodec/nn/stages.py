"""Refinement stages on top of the RAQ base quantizer: two candidate designs for model v2 (issue 20).

Both take the encoder's latents z and the base-stage quantized latents q1 (a prefix of the frozen RAQ
sequence) and return what the decoder sees, plus an estimate of the refinement's rate in bits.

- ``ScalarRefinement`` (design B): the residual z - q1 - mu(q1) is scalar-quantized with a step
  ``step * channel_step[c]``; mu and a Gaussian scale per latent come from a small network over q1, so the
  base stage doubles as side information (a hyperprior whose latents are the VQ indices). Rate grows without
  bound as the step shrinks; the rate model is the one an integer-table coder would use.
- ``ResidualVQ`` (design A): further VQ stages on the residual, each a codebook whose prefixes are all
  trained (so any size up to ``size`` works, like RAQ's nested prefixes). Rate is the order-0 entropy of
  each stage's indices.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .autoencoder import PIXEL_OFFSET, Decoder, Encoder
from .config import ModelConfig
from .quantizer import from_rows, nearest_indices, to_rows

LOG2 = math.log(2.0)


def straight_round(x: Tensor) -> Tensor:
    """round(x) forward, identity gradient."""
    return x + (torch.round(x) - x).detach()


def gaussian_bits(symbols: Tensor, scale: Tensor) -> Tensor:
    """-log2 of the mass of N(0, scale^2) on [s-1/2, s+1/2]: the bits of integer symbols s, and for
    non-integer s the smooth relaxation used in training."""
    scale = scale.clamp(min=0.11) * math.sqrt(2)
    magnitude = symbols.abs()
    # symmetric: evaluate the upper tail, where the difference of two erfc keeps its precision
    prob = 0.5 * (torch.erfc((magnitude - 0.5) / scale) - torch.erfc((magnitude + 0.5) / scale))
    return -torch.log2(prob.clamp(min=1e-9))


class ConditionedDecoder(Decoder):
    """A ``Decoder`` told how precise its input is: learned biases on the stem's output and on every
    residual block's hidden layer, chosen by the refinement level and the refined channel-group count
    (index 0 of each: no refinement; zero-initialised, so a warm start is the plain decoder's function).
    Without them one decoder cannot tell a coarse base-stage codeword from a fine refined latent, and the
    best image for each differs; sharing the base decoder that way cost the base stage 1.5-2.7 dB."""

    def __init__(self, cfg: ModelConfig, levels: int, group_channels: int = 8) -> None:
        super().__init__(cfg)
        self.bias_widths = [cfg.channels] + [cfg.res_channels] * cfg.decoder_blocks
        self.level_bias = nn.Embedding(levels + 1, sum(self.bias_widths))
        self.group_bias = nn.Embedding(cfg.latent_dim // group_channels + 1, sum(self.bias_widths))
        nn.init.zeros_(self.level_bias.weight)
        nn.init.zeros_(self.group_bias.weight)

    def forward(self, z: Tensor, level: Tensor | None = None, groups: Tensor | None = None) -> Tensor:
        """``level``: refinement level + 1 per image, ``groups``: refined groups (None: 0, no refinement)."""
        none = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
        level, groups = (none if level is None else level), (none if groups is None else groups)
        biases = (self.level_bias(level) + self.group_bias(groups)).split(self.bias_widths, dim=1)
        x = self.stem(z) + biases[0][:, :, None, None]
        for block, bias in zip(self.residual_blocks(), biases[1:]):
            # the block's own computation, with the bias added to its hidden layer
            hidden = block.conv3(torch.relu(x)) + bias[:, :, None, None]
            x = x + block.conv1(torch.relu(hidden))
        return self.shuffle(self.head(torch.relu(x))) + PIXEL_OFFSET


class ScalarRefinement(nn.Module):
    """Design B: a refinement autoencoder whose latents are coded as residuals of the base stage.

    The base stage (encoder, VQ, decoder of the RAQ model) stays as it is. The refinement has its own
    encoder and a conditioned decoder (``ConditionedDecoder``), both warm-started from the
    base model's; the residual of its latents against the base codewords plus a predicted mean is
    scalar-quantized, and a mean-scale prior over the base codewords models the symbols (the base stage
    is the hyperprior's side information). Keeping the base decoder apart matters: one decoder for both
    cost the base stage 1-2 dB (a codeword cannot say whether it is a coarse or a fine latent).
    """

    def __init__(self, cfg: ModelConfig, levels: int, hidden: int = 96) -> None:
        super().__init__()
        latent_dim = cfg.latent_dim
        self.encoder = Encoder(cfg)
        self.decoder = ConditionedDecoder(cfg, levels)
        self.prior = nn.Sequential(
            nn.Conv2d(latent_dim, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, 2 * latent_dim, 3, padding=1),
        )
        last = cast(nn.Conv2d, self.prior[-1])
        nn.init.zeros_(last.weight)
        assert last.bias is not None
        nn.init.zeros_(last.bias)
        self.log_channel_step = nn.Parameter(torch.zeros(latent_dim))

    def mean_scale(self, q1: Tensor) -> tuple[Tensor, Tensor]:
        out = self.prior(q1)
        mean, log_scale = out.chunk(2, dim=1)
        return mean, torch.exp(log_scale - 2.0)  # starts at scale e^-2 ~ the residual spread of raq-photo

    def forward(
        self, z: Tensor, q1: Tensor, step: Tensor | None, channels: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """step: (N,) global step per image, or None for the base stage alone (plus its mean).
        channels: (N,) how many leading channels are refined per image (None: all); the rest stay at
        the base stage, as in a file whose trailing channel groups were trimmed."""
        mean, scale = self.mean_scale(q1.detach())
        base = q1.detach() + mean
        if step is None:
            return base, torch.zeros(z.shape[0], device=z.device)
        steps = step[:, None, None, None] * torch.exp(self.log_channel_step)[None, :, None, None]
        scaled = (z - base) / steps
        symbols = straight_round(scaled)
        # rate of the noisy value while training (a smooth bound on the coded rate, Balle et al. 2018);
        # the decoder sees the rounded symbols either way
        noisy = scaled + torch.rand_like(scaled) - 0.5 if self.training else torch.round(scaled)
        if channels is not None:
            keep = torch.arange(z.shape[1], device=z.device)[None, :] < channels[:, None]
            symbols = symbols * keep[:, :, None, None]
        bits = gaussian_bits(noisy, scale / steps)
        if channels is not None:
            bits = bits * keep[:, :, None, None]
        return base + symbols * steps, bits.flatten(1).sum(1)


class ResidualVQ(nn.Module):
    """Design A: ``stages`` residual VQ codebooks of ``size`` vectors each, every prefix trained."""

    def __init__(self, latent_dim: int, stages: int = 2, size: int = 1024) -> None:
        super().__init__()
        self.books = nn.ParameterList([nn.Parameter(torch.randn(size, latent_dim) * 0.02) for _ in range(stages)])

    @torch.no_grad()
    def initialise(self, stage: int, residual_rows: Tensor, generator: torch.Generator) -> None:
        pick = torch.randperm(residual_rows.shape[0], generator=generator)[: self.books[stage].shape[0]]
        self.books[stage].copy_(residual_rows[pick])

    def forward(self, z: Tensor, q1: Tensor, sizes: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        """sizes: codebook size per used stage (len <= stages). Returns (quantized, bits, vq loss)."""
        quantized = q1
        bits = torch.zeros(z.shape[0], device=z.device)
        loss = z.new_zeros(())
        n, _, h, w = z.shape
        for book, size in zip(self.books, sizes):
            residual = to_rows(z - quantized).detach()
            codes = book[:size]
            idx = nearest_indices(residual, codes.detach())
            chosen = codes[idx]
            loss = loss + F.mse_loss(chosen, residual) + 0.25 * F.mse_loss(residual, chosen.detach())
            quantized = quantized + from_rows(chosen, z)
            bits = bits + order0_bits(idx.reshape(n, h * w), size)
        # straight-through for the encoder; the books learn from their codebook loss, as in VQ-VAE
        return z + (quantized - z).detach(), bits, loss


def order0_bits(indices: Tensor, size: int) -> Tensor:
    """Per image (rows of ``indices``): count * empirical entropy of its indices, in bits."""
    out = []
    for row in indices:
        counts = torch.bincount(row, minlength=size).double()
        probs = counts[counts > 0] / row.numel()
        out.append(-(counts[counts > 0] * torch.log2(probs)).sum())
    return torch.stack(out).float()
