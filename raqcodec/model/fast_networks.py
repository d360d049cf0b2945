"""The encoder's fast networks: its analysis and the float decoder's previews in the fastest precision
this CPU runs them in.

The budget search scores every candidate grid on the float decoder's image (``CodecModel.preview``), and
those forwards were a third of a default encode. CPUs with native bfloat16 arithmetic (AVX512-BF16,
AMX) run the convolutions in bfloat16, channels-last, 4-7x faster than float32 (768x512 on a 2-core
Sapphire Rapids: previews 0.013 s against 0.093 s, the analysis 0.017 s against 0.076 s). A preview
stays within one level of float32's (mean 0.2 levels on kodim23), which ranks the same candidates; the
analysis's latents are within 0.5% (the nearest codeword changes at 1-3% of the positions, near-ties).
Elsewhere bfloat16 is emulated and slower, so float32 stays.

Only encoder-side choices read these: decoding always runs the exact integer decoder, so a file decodes
to the same pixels everywhere; an encoder on another CPU may choose another (equally valid) file.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import torch
from torch import Tensor, nn

CPU_FLAGS = Path("/proc/cpuinfo")
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def native_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (Linux: its flags; other systems: assumed not)."""
    try:
        text = CPU_FLAGS.read_text()
    except OSError:
        return False
    flags = {word for line in text.splitlines() if line.startswith("flags") for word in line.split()}
    return bool(flags & NATIVE_BF16_FLAGS) and torch.backends.mkldnn.is_available()


class FastNetwork:
    """``network`` run in the fastest precision (a copy where it differs): float32 in, float32 out."""

    def __init__(self, network: nn.Module, device: torch.device) -> None:
        self.dtype = torch.bfloat16 if device.type == "cpu" and native_bfloat16() else torch.float32
        if self.dtype == torch.float32:
            self.network = network
        else:
            fast = copy.deepcopy(network).to(self.dtype)
            # Module.to takes memory_format (torch's documented use), which its type stubs leave out
            self.network = fast.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.network.eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        if self.dtype == torch.float32:
            return self.network(x)
        return self.network(x.to(self.dtype).contiguous(memory_format=torch.channels_last)).float()
