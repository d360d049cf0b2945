"""The scalar refinement stage in exact integer arithmetic (decoder side and the encoder's quantizer).

A refined latent is y = q1 + mu(q1) + m * step[level, c] for the channels c of the refined groups and
y = q1 + mu(q1) elsewhere, where q1 is the base stage's integer codeword grid, mu and a log-scale come
from the prior network (``raqcodec.nn.stages.ScalarRefinement.prior``) run as ``ExactConv`` layers, and
m are the coded integer symbols. Everything is an integer at the activation scale 2^-F, so the decoder
computes the same y, the same table indices and the same pixels on every machine.

Table index of a symbol: the table whose scale is nearest in the log domain to sigma / step, computed as
round((ln sigma - ln step - ln SCALE_MIN) / bucket width) on integers: ln sigma is the prior's output
(fixed point, 2^-F), ln step is frozen per level and channel, and the constants are frozen at the same
scale. Floats only built these frozen integers (at export), never the decisions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .exact import ExactConv, quantize_tensor, weight_frac_bits
from .gaussian_coder import SCALE_LEVELS, SCALE_MAX, SCALE_MIN, GaussianTables, freeze_tables

PREFIX = "refine."
FROZEN = "frozen.refine."
STEP_LEVELS = 32  # step[level] = STEP_MAX * 2^(-level / 4): 1.0 down to 0.0046
STEP_MAX = 1.0
LOG_SCALE_OFFSET = 2.0  # the prior's raw output is ln(sigma) + 2 (nn.stages.ScalarRefinement.mean_scale)


def step_value(level: int) -> float:
    return STEP_MAX * 2.0 ** (-level / 4)


@torch.no_grad()
def freeze(stage: nn.Module, act_frac_bits: int) -> dict[str, Tensor]:
    """Frozen integers of a trained ``ScalarRefinement``: prior weight scales, steps, log-steps, tables."""
    f = act_frac_bits
    out: dict[str, Tensor] = {}
    for i, layer in enumerate(_convs(stage)):
        out[f"{FROZEN}weight_bits.{i}"] = torch.tensor(weight_frac_bits(layer.weight), dtype=torch.int32)
    channel = stage.log_channel_step.detach().double()
    logs = torch.stack([math.log(step_value(level)) + channel for level in range(STEP_LEVELS)])
    out[f"{FROZEN}log_steps"] = torch.round(logs * 2.0**f).to(torch.int64)
    out[f"{FROZEN}steps"] = torch.round(torch.exp(logs) * 2.0**f).clamp(min=1).to(torch.int64)
    tails, freqs = freeze_tables()
    out[f"{FROZEN}tails"] = torch.from_numpy(tails)
    out[f"{FROZEN}freqs"] = torch.from_numpy(freqs)
    return out


def _convs(stage: nn.Module) -> list[nn.Conv2d]:
    return [m for m in stage.prior if isinstance(m, nn.Conv2d)]  # type: ignore[attr-defined]


@dataclass
class Prior:
    mean: Tensor  # (d, h, w) integer-valued float64 at 2^-F
    log_scale: Tensor  # (d, h, w) ln(sigma) at 2^-F, int64


class ExactRefinement:
    """Loaded from a model file's ``refine.*`` (float prior, for its shapes) and ``frozen.refine.*`` tensors."""

    def __init__(self, stage: nn.Module, tensors: dict[str, Tensor], act_frac_bits: int) -> None:
        f = self.frac_bits = act_frac_bits
        convs = _convs(stage)
        self.layers = [ExactConv(c, f, int(tensors[f"{FROZEN}weight_bits.{i}"])) for i, c in enumerate(convs)]
        self.log_steps = tensors[f"{FROZEN}log_steps"].to(torch.int64)
        self.steps = tensors[f"{FROZEN}steps"].to(torch.int64)
        if self.steps.shape != self.log_steps.shape or self.steps.shape[0] != STEP_LEVELS:
            raise ValueError("refinement step tables have the wrong shape")
        self.tables = GaussianTables(tensors[f"{FROZEN}tails"].numpy(), tensors[f"{FROZEN}freqs"].numpy())
        if self.tables.levels != SCALE_LEVELS:
            raise ValueError("refinement tables: wrong number of scales")
        self.latent_dim = self.steps.shape[1]
        # bucket arithmetic at 2^-F: offset and twice the bucket width, integers
        self.log_min = round((math.log(SCALE_MIN) + LOG_SCALE_OFFSET) * 2.0**f)
        self.width = round(math.log(SCALE_MAX / SCALE_MIN) / (SCALE_LEVELS - 1) * 2.0**f)

    @torch.no_grad()
    def prior(self, q1: Tensor) -> Prior:
        """q1 (d, h, w) integer-valued float64 codewords at 2^-F."""
        x = q1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = x.clamp(min=0)
        d = self.latent_dim
        return Prior(mean=x[:d].contiguous(), log_scale=x[d:].to(torch.int64))

    def table_index(self, prior: Prior, level: int) -> np.ndarray:
        """(d, h, w) table per symbol: nearest table scale to sigma / step."""
        rel = prior.log_scale - self.log_steps[level][:, None, None] - self.log_min
        index = torch.div(2 * rel + self.width, 2 * self.width, rounding_mode="floor")
        return index.clamp(0, SCALE_LEVELS - 1).numpy()

    def reconstruct(self, q1: Tensor, prior: Prior, symbols: Tensor | None, level: int, channels: int) -> Tensor:
        """y at 2^-F for ``symbols`` (d, h, w) int64 of the first ``channels`` channels (rest ignored)."""
        y = q1 + prior.mean
        if symbols is not None and channels:
            step = self.steps[level][:channels, None, None].to(torch.float64)
            y[:channels] += symbols[:channels].to(torch.float64) * step  # |m * step| < 2^53: both bounded
        return y

    def quantize(self, z: Tensor, q1: Tensor, prior: Prior, level: int) -> Tensor:
        """Encoder: nearest symbols for float latents z (d, h, w) (in latent units). Only the encoder runs
        this; its floats choose symbols, which the stream then carries."""
        target = z.double() * 2.0**self.frac_bits - q1 - prior.mean
        step = self.steps[level][:, None, None].to(torch.float64)
        return torch.round(target / step).to(torch.int64)
