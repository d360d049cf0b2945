"""Turning a training run into a shipped model: freeze its newest checkpoint and write the model card."""

from __future__ import annotations

import json
import platform
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..model.files import freeze, write_card, write_model_file
from ..nn.raq import RAQModel
from .data import center_crops, list_images, load_rgb
from .recipe import Recipe
from .state import latest_checkpoint, load_training_state, read_info

CALIBRATION_IMAGES = 16


def calibration_batch(data: list[Path], crop: int = 256) -> torch.Tensor:
    """Centre crops of a spread of training images (every n-th file): enough to see activation peaks."""
    files = list_images(data)
    if not files:
        raise ValueError("no images found for calibration in " + ", ".join(map(str, data)))
    step = max(1, len(files) // CALIBRATION_IMAGES)
    images = [load_rgb(p, 512) for p in files[::step][:CALIBRATION_IMAGES]]
    side = min(crop, *(min(im.shape[1:]) // 4 * 4 for im in images))  # small data sets: smaller crops
    return center_crops(images, side)


def training_summary(run_dir: Path) -> dict[str, Any]:
    """Steps, compute seconds and the last validation record from a run's log.jsonl."""
    by_step: dict[int, dict[str, Any]] = {}
    log = run_dir / "log.jsonl"
    if log.exists():
        for line in log.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            by_step[record["step"]] = record  # a resumed run may repeat steps: keep the last
    validation = [r for r in by_step.values() if any(k.startswith("psnr") for k in r)]
    return {
        "logged_steps": len(by_step),
        "train_seconds": round(sum(r.get("seconds", 0.0) for r in by_step.values()), 1),
        "last_validation": {k: v for k, v in validation[-1].items() if k == "step" or k.startswith("psnr")}
        if validation
        else None,
    }


def export_run(run_dir: Path, name: str, out_dir: Path, data: list[Path], description: str) -> dict[str, Any]:
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise ValueError(f"no checkpoint in {run_dir}")
    info = read_info(checkpoint)
    recipe = Recipe.from_dict(info["recipe"], info["recipe"].get("name", "recipe"))
    model = RAQModel(recipe.model)
    load_training_state(checkpoint, model, None, None)
    fixed = recipe.train.mode == "fixed"
    tensors = freeze(model, calibration_batch(data), fixed=fixed)
    # A fixed-rate model codes with its base codebook only: its codebook range is K..K.
    config = (
        replace(recipe.model, k_min=recipe.model.codebook_size, k_max=recipe.model.codebook_size)
        if fixed
        else recipe.model
    )
    weights = out_dir / f"{name}.safetensors"
    fp = write_model_file(weights, name, config, tensors)
    card: dict[str, Any] = {
        "name": name,
        "description": description,
        "fingerprint": fp,
        "architecture": config.to_dict(),
        "codebook_size": config.codebook_size,
        "k_range": [config.k_min, config.k_max],
        "parameters": sum(t.numel() for k, t in tensors.items() if not k.startswith("frozen.")),
        "training": {
            "recipe": recipe.to_dict(),
            "data": [str(p) for p in data],
            "images": len(list_images(data)),
            "steps": int(info["step"]),
            "hardware": f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}",
            **training_summary(run_dir),
        },
        "kodak": None,  # filled by benchmarks/kodak_eval.py --update-card
        "bpp_range_kodak": None,
    }
    write_card(weights.with_suffix(".json"), card)
    return card
