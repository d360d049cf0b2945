"""Seq2seq codebook adapter: the data-driven RAQ of Seo & Kang, "Rate-Adaptive Quantization" (arXiv 2405.14222).

An encoder LSTM reads the K base vectors; a decoder LSTM started from its final state emits adapted vectors
one per step. The codebook of size K~ is the first K~ outputs, so codebooks of all sizes are nested prefixes
of one sequence of ``k_max`` vectors; ``generate`` returns that sequence.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import ModelConfig


class Seq2SeqAdapter(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.latent_dim
        self.cfg = cfg
        self.encoder = nn.LSTM(d, d, cfg.adapter_layers, dropout=cfg.adapter_dropout, batch_first=True)
        self.decoder = nn.LSTM(d, d, cfg.adapter_layers, dropout=cfg.adapter_dropout, batch_first=True)
        # One learned input per decoder step (the paper's learned embedding, k_max rows).
        self.step_embedding = nn.Parameter(torch.randn(cfg.k_max, d) * 0.1)

    def forward(self, base: Tensor, length: int) -> Tensor:
        """Adapted codebook (length, d) from the base codebook (K, d); length <= k_max."""
        if not 1 <= length <= self.cfg.k_max:
            raise ValueError(f"codebook size {length} outside 1..{self.cfg.k_max}")
        _, state = self.encoder(base[None])
        if self.cfg.cross_forcing == "paper":
            return self._run_with_feedback(base, length, state)
        out, _ = self.decoder(self._teacher_inputs(base, length)[None], state)
        return out[0]

    def _teacher_inputs(self, base: Tensor, length: int) -> Tensor:
        """Inputs known before decoding: base vector e_{t//2} on odd steps t < 2K (cross-forcing, reference
        code), the learned step embedding elsewhere; with cross_forcing "none" embeddings only."""
        inputs = self.step_embedding[:length]
        if self.cfg.cross_forcing == "none":
            return inputs
        k = base.shape[0]
        odd = torch.arange(1, min(length, 2 * k), 2, device=base.device)
        if odd.numel() == 0:
            return inputs
        inputs = inputs.clone()
        inputs[odd] = base[(odd - 1) // 2]
        return inputs

    def _run_with_feedback(self, base: Tensor, length: int, state: tuple[Tensor, Tensor]) -> Tensor:
        """Paper's cross-forcing: for steps < 2K odd steps take base vectors and even steps the previous
        output; after 2K every input is the previous output. Sequential, hence slower."""
        k = base.shape[0]
        outputs: list[Tensor] = []
        x = self.step_embedding[0]
        for t in range(length):
            if t > 0:
                x = base[(t - 1) // 2] if (t % 2 == 1 and t < 2 * k) else outputs[-1]
            y, state = self.decoder(x[None, None], state)
            outputs.append(y[0, 0])
        return torch.stack(outputs)

    @torch.no_grad()
    def generate(self, base: Tensor) -> Tensor:
        """The whole nested sequence (k_max, d) in eval mode; every codebook is a prefix of it."""
        was_training = self.training
        self.eval()
        try:
            return self.forward(base, self.cfg.k_max)
        finally:
            self.train(was_training)
