"""The encoder's preview network: the float decoder in the fastest precision this CPU runs it in.

The budget search scores every candidate grid on the float decoder's image (``CodecModel.preview``), and
those forwards are a third of a default encode. CPUs with native bfloat16 arithmetic (AVX512-BF16,
AMX) run the decoder's convolutions in bfloat16, channels-last, about 7x faster than float32 (768x512:
0.013 s against 0.093 s on a 2-core Sapphire Rapids), and the image stays within one level of
float32's (mean 0.2 levels on kodim23), which ranks the same candidates. Elsewhere bfloat16 is
emulated and slower, so float32 stays.

Only encoder-side choices read previews: decoding always runs the exact integer decoder, so a file
decodes to the same pixels everywhere; an encoder on another CPU may choose another (equally valid) file.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import torch
from torch import nn

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


def preview_network(decoder: nn.Module, device: torch.device) -> tuple[nn.Module, torch.dtype]:
    """The network previews run (a copy where its precision or layout differs) and its input dtype."""
    if device.type == "cpu" and native_bfloat16():
        fast = copy.deepcopy(decoder).to(torch.bfloat16).to(memory_format=torch.channels_last)
        return fast.eval().requires_grad_(False), torch.bfloat16
    return decoder, torch.float32
