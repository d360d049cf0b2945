"""Shipped model files: ``<name>.safetensors`` (weights + frozen integer tables) and ``<name>.json`` (model card).

Exporting *freezes* a trained model for coding (as CompressAI's ``update()`` freezes entropy tables): the
seq2seq adapter generates its whole nested codebook sequence once, and the sequence is stored as integers
at the exact decoder's activation scale, with that scale and the per-layer weight scales. Coding uses only
these frozen tables, so encoder and decoder agree bit for bit on every machine, and no codebook is ever
generated per image. Loading goes through safetensors only: a model file is data, never code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..errors import ModelFileError
from ..io.atomic import atomic_path
from ..nn.config import ModelConfig
from ..nn.quantizer import nearest_indices, to_rows
from ..nn.raq import RAQModel
from .exact import calibrate_act_frac_bits, decoder_weight_bits

FILE_FORMAT = 1
# Tensors of a RAQModel state dict that only training needs (EMA accumulators).
TRAINING_ONLY = ("codebook.cluster_size", "codebook.embedding_sum", "codebook.initialized")


# Tensors of the context model (``raqcodec.entropy.context``). They are not part of the fingerprint: the fingerprint
# names what turns indices into pixels (codebooks and decoder), so adding or retraining a context model keeps
# older streams decodable; a stream coded with a context model carries the context model's own checksum.
CONTEXT_PREFIX = "context."


def fingerprint(tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> str:
    """SHA-256 (hex) over the architecture and every tensor's name, dtype, shape and bytes, in name order
    (context model tensors excluded)."""
    h = hashlib.sha256()
    h.update(json.dumps(config, sort_keys=True).encode())
    for name in sorted(n for n in tensors if not n.startswith(CONTEXT_PREFIX)):
        t = tensors[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class ModelFile:
    """The contents of a model file: architecture, tensors, and the metadata stored beside them."""

    config: ModelConfig
    tensors: dict[str, torch.Tensor]
    name: str
    fingerprint: str


def read_model_file(path: Path) -> ModelFile:
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        info = json.loads(meta["raqcodec"])
        if info.get("file_format") != FILE_FORMAT:
            raise ModelFileError(f"{path} has model file format {info.get('file_format')}, expected {FILE_FORMAT}")
        config = ModelConfig.from_dict(info["config"])
    except ModelFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors/json/config errors all mean the same thing to a user
        raise ModelFileError(f"{path} is not a valid raqcodec model file ({exc})") from None
    return ModelFile(
        config=config,
        tensors=tensors,
        name=info.get("name", path.stem),
        fingerprint=fingerprint(tensors, config.to_dict()),
    )


@torch.no_grad()
def freeze(model: RAQModel, calibration: torch.Tensor, fixed: bool = False) -> dict[str, torch.Tensor]:
    """Float weights plus the frozen integer tables of a trained model.

    ``calibration``: a few images (N, 3, H, W) in [0, 1] used to pick the activation scale of the exact
    decoder so that no activation saturates. ``fixed``: a fixed-rate model (trained without the adapter):
    its one codebook is the base codebook, frozen as the sequence, and the untrained adapter is left out.
    """
    model.eval()
    sequence = model.codebook.embedding if fixed else model.adapter.generate(model.codebook.embedding)
    z = model.encoder(calibration)
    rows = to_rows(z)
    n, d, h, w = z.shape
    # Latents the decoder will really see: calibration images quantized with small, large and base
    # codebooks, and every vector of the sequence (as a k_max x 1 image).
    probes = [sequence, sequence[: model.cfg.k_min], model.codebook.embedding]
    batches = [book[nearest_indices(rows, book)].reshape(n, h, w, d).permute(0, 3, 1, 2) for book in probes]
    batches.append(sequence.t()[None, :, :, None])
    frac = min(calibrate_act_frac_bits(model.decoder, b.contiguous()) for b in batches)
    tensors = {
        k: v.detach().clone().contiguous()
        for k, v in model.state_dict().items()
        if k not in TRAINING_ONLY and not (fixed and k.startswith("adapter."))
    }
    tensors["frozen.sequence"] = torch.round(sequence.double() * 2.0**frac).to(torch.int32)
    tensors["frozen.act_frac_bits"] = torch.tensor(frac, dtype=torch.int32)
    for layer, bits in decoder_weight_bits(model.decoder).items():
        tensors[f"frozen.weight_bits.{layer}"] = torch.tensor(bits, dtype=torch.int32)
    return tensors


def write_model_file(path: Path, name: str, config: ModelConfig, tensors: dict[str, torch.Tensor]) -> str:
    """Write atomically; returns the fingerprint."""
    meta = {"raqcodec": json.dumps({"file_format": FILE_FORMAT, "name": name, "config": config.to_dict()})}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return fingerprint(tensors, config.to_dict())


def write_card(path: Path, card: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
