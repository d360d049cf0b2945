"""Warm start: initialise a training run from a shipped model file, possibly into a larger architecture.

Growing keeps the model's function where it can: decoder residual blocks that the file lacks start with
a zero output convolution (an identity block), and a longer ``k_max`` keeps the learned step embeddings
as a prefix, so the first codebooks of the adapter's sequence are unchanged. Anything else that does not
match (channels, latent size, base codebook size) is an error: that is a new model, not a grown one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..model.files import CONTEXT_PREFIX, read_model_file
from ..model.registry import resolve
from ..nn.raq import RAQModel

STEP_EMBEDDING = "adapter.step_embedding"


def warm_start(model: RAQModel, name_or_path: str, latents_per_batch: int) -> list[str]:
    """Copy a model file's float weights into ``model``; returns the parameter names that were grown.

    ``latents_per_batch`` sets the EMA codebook's restarted usage counts to their steady-state size.
    """
    source = read_model_file(resolve(name_or_path))
    # frozen tables are recomputed at export; a context model describes the source's index statistics and
    # must be retrained for the new model (raqcodec train-context)
    weights = {k: v for k, v in source.tensors.items() if not k.startswith(("frozen.", CONTEXT_PREFIX))}
    state = model.state_dict()
    grown: list[str] = []
    loaded: dict[str, Tensor] = {}
    for name, value in weights.items():
        if name not in state:
            raise ValueError(f"warm start: {name} of {source.name} has no place in this architecture")
        target = state[name]
        if value.shape == target.shape:
            loaded[name] = value
        elif name == STEP_EMBEDDING and value.shape[1:] == target.shape[1:] and value.shape[0] < target.shape[0]:
            extended = target.clone()
            extended[: value.shape[0]] = value
            loaded[name] = extended
            grown.append(name)
        else:
            raise ValueError(f"warm start: {name} is {tuple(value.shape)} in {source.name}, {tuple(target.shape)} here")
    with torch.no_grad():
        for name in state:
            if name in loaded or not name.startswith("decoder.blocks."):
                continue
            if name.endswith("conv1.weight") or name.endswith("conv1.bias"):
                loaded[name] = torch.zeros_like(state[name])  # new block = identity until it learns
            grown.append(name)
    model.load_state_dict(loaded, strict=False)
    # The EMA accumulators are not shipped. Restart them as if every code had had its even share of a
    # batch all along: with counts of 1 (a fresh start) the first batches would drag every code halfway
    # to noisy batch means, and the adapter, which reads the base codebook, would shift every codebook
    # with it (measured: -1 dB at K~=16 after 600 steps).
    book = model.codebook
    with torch.no_grad():
        book.cluster_size.fill_(latents_per_batch / book.size)
        book.embedding_sum.copy_(book.embedding * book.cluster_size[:, None])
        book.initialized.fill_(True)
    # A fixed-rate model ships no adapter: the adapter then starts fresh.
    fresh = (
        ("codebook.", "decoder.blocks.", "adapter.")
        if not any(k.startswith("adapter.") for k in weights)
        else ("codebook.", "decoder.blocks.")
    )
    missing = [n for n in state if n not in loaded and not n.startswith(fresh)]
    if missing:
        raise ValueError(f"warm start: {source.name} lacks {', '.join(missing[:4])}")
    return grown
