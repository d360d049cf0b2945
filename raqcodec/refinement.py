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

from .exact import ExactConv, ExactDecoder, decoder_weight_bits, quantize_tensor, weight_frac_bits
from .nn.config import ModelConfig
from .gaussian_coder import SCALE_LEVELS, SCALE_MAX, SCALE_MIN, GaussianTables, freeze_tables

PREFIX = "refine."
FROZEN = "frozen.refine."
STEP_LEVELS = 32  # step[level] = STEP_MAX * 2^(-level / 4): 1.0 down to 0.0046
STEP_MAX = 1.0
GROUP_CHANNELS = 8  # channels per refinement section: the unit a stream is trimmed by
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
    for name, bits in decoder_weight_bits(stage.decoder).items():  # type: ignore[arg-type]
        out[f"{FROZEN}decoder_bits.{name}"] = torch.tensor(bits, dtype=torch.int32)
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


def load_refinement(tensors: dict[str, Tensor], cfg: ModelConfig, act_frac_bits: int) -> "ExactRefinement | None":
    """The exact refinement stage of a model file, or None for a model without one (format 1-2 models)."""
    weights = {k[len(PREFIX):]: v for k, v in tensors.items() if k.startswith(PREFIX)}
    if not weights:
        return None
    from .nn.stages import ScalarRefinement

    levels = int(weights["decoder.level_bias.weight"].shape[0]) - 1
    stage = ScalarRefinement(cfg, levels, hidden=int(weights["prior.0.weight"].shape[0]))
    stage.load_state_dict(weights)
    return ExactRefinement(stage.eval().requires_grad_(False), tensors, act_frac_bits)


@dataclass
class Prior:
    mean: Tensor  # (d, h, w) integer-valued float64 at 2^-F
    log_scale: Tensor  # (d, h, w) ln(sigma) at 2^-F, int64


class ExactRefinement:
    """Loaded from a model file's ``refine.*`` (float prior, for its shapes) and ``frozen.refine.*`` tensors."""

    def __init__(self, stage: nn.Module, tensors: dict[str, Tensor], act_frac_bits: int) -> None:
        f = self.frac_bits = act_frac_bits
        self.float_stage = stage  # float twin: the encoder, and the rate control's estimates
        self.encoder = stage.encoder  # type: ignore[union-attr]
        self.float_decoder = stage.decoder  # type: ignore[union-attr]
        decoder_bits = {k[len(f"{FROZEN}decoder_bits."):]: int(v) for k, v in tensors.items()
                        if k.startswith(f"{FROZEN}decoder_bits.")}
        self.decoder = ExactDecoder(stage.decoder, f, decoder_bits)  # type: ignore[arg-type]
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

    def to(self, device: torch.device) -> "ExactRefinement":
        """Networks that run per image move; the prior and the tables stay on the CPU (they are small)."""
        self.encoder.to(device)
        self.float_decoder.to(device)
        self.decoder.to(device)
        return self

    @property
    def groups(self) -> int:
        return self.latent_dim // GROUP_CHANNELS

    def encode_groups(self, symbols: Tensor, prior: Prior, level: int, groups: int) -> list[bytes]:
        """One section per leading channel group: each an independent rANS payload, so trailing ones
        can be dropped from a file without touching the others."""
        tables = self.table_index(prior, level)
        values = symbols.numpy()
        return [self.tables.encode(values[_group(g)], tables[_group(g)]) for g in range(groups)]

    def decode_groups(self, sections: list[bytes], prior: Prior, level: int) -> Tensor:
        """Symbols (d, h, w) int64 of the given leading groups, zero in the channels of the others."""
        tables = self.table_index(prior, level)
        out = np.zeros(tables.shape, dtype=np.int64)
        for g, section in enumerate(sections):
            out[_group(g)] = self.tables.decode(section, tables[_group(g)])
        return torch.from_numpy(out)

    def group_bits(self, symbols: Tensor, prior: Prior, level: int) -> list[float]:
        """Ideal bits of every group's section (rate control's estimate)."""
        tables = self.table_index(prior, level)
        values = symbols.numpy()
        return [self.tables.ideal_bits(values[_group(g)], tables[_group(g)]) for g in range(self.groups)]


def _group(g: int) -> slice:
    return slice(g * GROUP_CHANNELS, (g + 1) * GROUP_CHANNELS)
