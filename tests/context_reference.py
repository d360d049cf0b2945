"""A second, plain implementation of the context model's integer frequencies, for the tests.

It follows the module docstring of ``raqcodec.entropy.context`` literally: float64 sums of the slot features,
``t = floor(f * d2) + (A_max - A_m)``, the minimum over components and codewords subtracted, clamped to
the table, summed over components, and normalised with int64 division. ``raqcodec.entropy.context`` computes
the same integers with fewer passes over memory (split float32 sums, one shift per row, truncation,
pair tables, float64 division); tests compare the two.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from raqcodec.entropy import context as C
from raqcodec.entropy.scan import MEAN_SLOTS, SLOT_OFFSETS, size_bin


def _floor_shift(x: Tensor, bits: int) -> Tensor:
    return torch.floor(x * 2.0**-bits)


def reference_frequencies(
    ctx: C.ContextModel, codebook: Tensor, slots: np.ndarray, pass_ids: np.ndarray, sharpness: int = 0
) -> Tensor:
    """(n, K) int64 frequencies of n positions."""
    book = codebook.to(torch.float64)
    k = book.shape[0]
    m, r, hsize = ctx.components, ctx.proj_dim, ctx.hidden_size
    feats = _floor_shift(
        torch.einsum("shd,kd->skh", ctx.slot_weight, book), ctx.codebook_bits + ctx.slot_bits - C.ACT_BITS
    ).clamp(-C.ACT_LIMIT, C.ACT_LIMIT)
    feats = torch.cat([feats, ctx.missing[:, None, :].to(torch.float64)], 1).reshape(-1, hsize)
    proj = _floor_shift(book @ ctx.proj.t(), ctx.codebook_bits + ctx.proj_bits - C.ACT_BITS)
    proj = torch.cat([proj.clamp(-C.PROJ_LIMIT, C.PROJ_LIMIT).to(torch.int64), torch.zeros(1, r, dtype=torch.int64)])
    bias = (ctx.pass_bias + ctx.size_bias[size_bin(k)]).to(torch.float64)

    sl = torch.from_numpy(slots)
    rows = sl + torch.arange(len(SLOT_OFFSETS))[None, :] * (k + 1)
    h1 = feats[rows].sum(1)  # float64 sums of integers below 2^26: exact
    h1 = (h1 + bias[torch.from_numpy(pass_ids)]).clamp(0, C.ACT_LIMIT)
    h2 = (_floor_shift(h1 @ ctx.hidden_weight, ctx.hidden_bits).to(torch.int64) + ctx.hidden_bias).clamp(0, C.ACT_LIMIT)
    out = _floor_shift(h2.to(torch.float64) @ ctx.head_weight, ctx.head_bits).to(torch.int64) + ctx.head_bias
    out = out.clamp(-C.ACT_LIMIT, C.ACT_LIMIT).view(-1, m, r + 2)
    near = (sl[:, :MEAN_SLOTS] < k).sum(1).clamp(min=1)
    base = torch.div(proj[sl[:, :MEAN_SLOTS]].sum(1), near[:, None], rounding_mode="floor")
    mu = (base[:, None, :] + out[..., :r]).clamp(-C.PROJ_LIMIT, C.PROJ_LIMIT)  # (n, M, r)
    log_prec = torch.div(out[..., r + 1], 2 ** (C.ACT_BITS - C.LOG_PREC_BITS), rounding_mode="floor") + sharpness
    factor = ctx.scale_lut[log_prec.clamp(-C.LOG_PREC_LOW, C.LOG_PREC_HIGH) + C.LOG_PREC_LOW]  # (n, M)
    d2 = ((mu[:, :, None, :] - proj[None, None, :k, :]) ** 2).sum(-1).to(torch.float64)  # (n, M, K), < 2^42
    a = torch.div(out[..., r], 2 ** (C.ACT_BITS - 4), rounding_mode="floor")
    t = torch.floor(d2 * factor[..., None]).to(torch.int64) + (a.amax(1, keepdim=True) - a)[..., None]
    t = (t - t.amin(dim=(1, 2), keepdim=True)).clamp(max=C.EXP_STEPS - 1)
    w = ctx.exp_lut[t].sum(1)  # (n, K) int64
    spare = (1 << C.PRECISION) - k
    freq = 1 + torch.div(w * spare, w.sum(1, keepdim=True), rounding_mode="floor")
    freq[torch.arange(len(w)), w.argmax(1)] += (1 << C.PRECISION) - freq.sum(1)
    return freq
