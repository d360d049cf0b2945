"""Training checkpoints as safetensors: model, optimizer and RNG state, never pickle.

A checkpoint holds tensors under ``model.*``, ``optim.<param>.<key>`` and ``rng.*``; everything else
(step, recipe, optimizer hyper-parameters) is JSON in the safetensors metadata under ``raqcodec``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file

from ..io.atomic import atomic_path


def rng_key(kind: str, rank: int) -> str:
    """Checkpoint name of a rank's RNG state: rank 0 (and a single process) uses the plain name."""
    return f"rng.{kind}" if rank == 0 else f"rng.{kind}.r{rank}"


def save_training_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rng_states: dict[str, torch.Tensor],
    info: dict[str, Any],
) -> None:
    """``rng_states`` maps ``rng_key(kind, rank)`` to uint8 states: every rank's, so a data-parallel run
    resumes exactly too."""
    tensors: dict[str, torch.Tensor] = {
        f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()
    }
    opt = optimizer.state_dict()
    for pid, pstate in opt["state"].items():
        for key, value in pstate.items():
            tensors[f"optim.{pid}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors.update(rng_states)
    meta = dict(info, param_groups=opt["param_groups"])
    with atomic_path(path) as tmp:  # a crash mid-write never leaves a truncated checkpoint
        save_file(tensors, str(tmp), metadata={"raqcodec": json.dumps(meta)})


def read_info(path: Path) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta.get("raqcodec", "{}"))


def load_training_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    generator: torch.Generator | None,
    rank: int = 0,
) -> dict[str, Any]:
    """Restore a checkpoint. A rank whose RNG state the checkpoint lacks (more ranks than were saved)
    keeps the generator it was given: training continues, but not bit-for-bit."""
    tensors = load_file(str(path))
    info = read_info(path)
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    if optimizer is not None:
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, pid, name = key.split(".", 2)
                state.setdefault(int(pid), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    if generator is not None and rng_key("data", rank) in tensors:
        generator.set_state(tensors[rng_key("data", rank)])
        torch.set_rng_state(tensors[rng_key("torch", rank)])
    return info


def latest_checkpoint(directory: Path) -> Path | None:
    found = sorted(directory.glob("step-*.safetensors"))
    return found[-1] if found else None
