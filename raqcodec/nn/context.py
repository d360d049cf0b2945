"""The context model's network, in float (training) form, and the coding order it is trained for.

p(index | decoded neighbours, K~) over the codebook of the size in use. The grid is coded in
interlaced passes (coarse to fine, like Adam7): a sparse lattice first, then at each finer scale the
centres of the known squares, then the remaining two edge phases. Every symbol after the first pass sees
decoded neighbours on all sides, and each pass is one vectorised step for the decoder.

The network maps the codewords of up to 20 neighbours (the 5x5 neighbourhood without its corners, each with
its own projection, a learned vector where a neighbour is not decoded) plus the
pass and the codebook size to a mixture of M isotropic Gaussians in a learned r-dimensional projection of
the latent space, centred around the mean of the decoded neighbours. The probability of codeword k is the
mixture density at its projection, normalised over the codebook. Because it is a density over the latent
space, one network serves every codebook size. ``raqcodec.entropy.context`` evaluates the frozen network in
integer arithmetic for coding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ..entropy.scan import MEAN_SLOTS, NUM_PASSES, SIZE_BINS, SLOT_OFFSETS, size_bin


@dataclass(frozen=True)
class ContextConfig:
    latent_dim: int = 64
    hidden: int = 96
    proj_dim: int = 32
    components: int = 3

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class ContextNet(nn.Module):
    """Float context model; ``log_probs`` is what training minimises (cross-entropy in nats)."""

    def __init__(self, cfg: ContextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        s, h, d, r, m = len(SLOT_OFFSETS), cfg.hidden, cfg.latent_dim, cfg.proj_dim, cfg.components
        self.slot_weight = nn.Parameter(torch.randn(s, h, d) / d**0.5)
        self.missing = nn.Parameter(torch.zeros(s, h))
        self.pass_bias = nn.Parameter(torch.zeros(NUM_PASSES, h))
        self.size_bias = nn.Parameter(torch.zeros(SIZE_BINS, h))
        self.proj = nn.Parameter(torch.randn(r, d) / d**0.5)
        self.hidden = nn.Linear(h, h)
        self.head = nn.Linear(h, m * (r + 2))
        with torch.no_grad():  # start as "the mean of the neighbours, one broad component each"
            self.head.weight.mul_(0.1)
            self.head.bias.zero_()

    def log_probs(self, codebook: Tensor, slots: Tensor, pass_ids: Tensor, size: int) -> Tensor:
        """(n, K) log-probabilities. codebook (K, d) float; slots (n, S) with K meaning 'missing'."""
        k = codebook.shape[0]
        m, r = self.cfg.components, self.cfg.proj_dim
        known = slots < k
        safe = torch.where(known, slots, torch.zeros_like(slots))
        feats = torch.einsum("shd,kd->skh", self.slot_weight, codebook)  # (S, K, H)
        gathered = feats[torch.arange(len(SLOT_OFFSETS))[None, :], safe]  # (n, S, H)
        gathered = torch.where(known[..., None], gathered, self.missing[None])
        h1 = torch.relu(gathered.sum(1) + self.pass_bias[pass_ids] + self.size_bias[size_bin(size)])
        out = self.head(torch.relu(self.hidden(h1))).view(-1, m, r + 2)
        projected = codebook @ self.proj.t()  # (K, r)
        near = known[:, :MEAN_SLOTS].to(codebook.dtype)
        base = (projected[safe[:, :MEAN_SLOTS]] * near[..., None]).sum(1) / near.sum(1).clamp(min=1)[:, None]
        mu = base[:, None] + out[..., :r]  # (n, M, r)
        d2 = (mu.pow(2).sum(-1, keepdim=True) - 2 * mu @ projected.t() + projected.pow(2).sum(-1)).clamp(min=0)
        logits = torch.logsumexp(out[..., r, None] - torch.exp(out[..., r + 1, None]) * d2, 1)
        return torch.log_softmax(logits, 1)
