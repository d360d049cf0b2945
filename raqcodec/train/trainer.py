"""The training loop: joint RAQ training (or fixed-rate), resumable exactly from its checkpoints.

Every ``checkpoint_every`` steps the whole state (weights, EMA buffers, optimizer, RNG) goes to
``<out>/step-XXXXXXXX.safetensors``; ``train`` picks up the newest one, so an interrupted run continues
with the same batches, K~ draws and losses as an uninterrupted one. Metrics go to ``<out>/log.jsonl``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..nn.quantizer import to_rows
from ..nn.raq import RAQModel
from .data import BatchSource
from .recipe import Recipe
from .warmstart import warm_start
from .state import latest_checkpoint, load_training_state, save_training_state


def draw_codebook_size(recipe: Recipe, generator: torch.Generator) -> int:
    lo, hi = recipe.model.k_min, recipe.model.k_max
    sampling = recipe.train.k_sampling
    if sampling == "mixed":
        pick = float(torch.rand((), generator=generator, dtype=torch.float64))
        sampling = "uniform" if pick < recipe.train.uniform_fraction else "log-uniform"
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    if sampling == "uniform":
        return lo + min(hi - lo, int(u * (hi - lo + 1)))
    return min(hi, int(math.floor(math.exp(math.log(lo) + u * (math.log(hi + 1) - math.log(lo))))))


def learning_rate(recipe: Recipe, step: int) -> float:
    t = recipe.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    progress = min(1.0, (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps))
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean(((a.clamp(0, 1) - b) * 255) ** 2)
    return float(10 * torch.log10(255.0**2 / mse.clamp(min=1e-10)))


@torch.no_grad()
def validate(model: RAQModel, images: torch.Tensor, sizes: list[int]) -> dict[str, float]:
    """PSNR of held-out crops at each K~ of ``sizes`` (and at the base codebook)."""
    model.eval()
    try:
        out = {"psnr_base": psnr(model.reconstruct(images, model.codebook.embedding), images)}
        sequence = model.adapter.generate(model.codebook.embedding)
        for k in sizes:
            if k <= sequence.shape[0]:
                out[f"psnr_k{k}"] = psnr(model.reconstruct(images, sequence[:k]), images)
        return out
    finally:
        model.train()


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records past the checkpoint we resume from: they will be logged again."""
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


@dataclass
class TrainResult:
    step: int
    checkpoint: Path
    seconds: float


def train(
    recipe: Recipe,
    source: BatchSource,
    out_dir: Path,
    validation: torch.Tensor | None = None,
    max_minutes: float | None = None,
    max_steps: int | None = None,
    show_progress: bool = True,
    on_metrics: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Run (or resume) training until ``recipe.train.steps``, ``max_steps`` or ``max_minutes``."""
    t = recipe.train
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(t.seed)
    generator = torch.Generator().manual_seed(t.seed)
    model = RAQModel(recipe.model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)

    step = 0
    resume_from = latest_checkpoint(out_dir)
    if resume_from is not None:
        info = load_training_state(resume_from, model, optimizer, generator)
        step = int(info["step"])
        _truncate_log(out_dir / "log.jsonl", step)
    elif t.init_from:
        warm_start(model, t.init_from)
    (out_dir / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2))
    stop_at = min(t.steps, max_steps) if max_steps is not None else t.steps
    deadline = time.monotonic() + max_minutes * 60 if max_minutes is not None else math.inf
    started = time.monotonic()
    model.train()

    def checkpoint() -> Path:
        path = out_dir / f"step-{step:08d}.safetensors"
        save_training_state(path, model, optimizer, generator, {"step": step, "recipe": recipe.to_dict()})
        for old in sorted(out_dir.glob("step-*.safetensors"))[:-2]:  # keep the two newest
            old.unlink()
        return path

    progress = Progress(TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                        TimeElapsedColumn(), TimeRemainingColumn(), disable=not show_progress)
    last = resume_from
    with progress, (out_dir / "log.jsonl").open("a", encoding="utf-8") as log:
        task = progress.add_task("train", total=stop_at, completed=step, info="")
        while step < stop_at and time.monotonic() < deadline:
            tick = time.monotonic()
            x = source.batch(t.batch_size, generator)
            if not bool(model.codebook.initialized):
                model.codebook.initialize_from(to_rows(model.encoder(x)).detach(), generator)
            size = draw_codebook_size(recipe, generator) if t.mode == "raq" else None
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(recipe, step)
            out = model.training_step(x, size)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
            optimizer.step()
            restarted = model.codebook.update(out.rows, out.base_indices, generator)
            step += 1
            record = {"step": step, "k": size, "lr": learning_rate(recipe, step - 1), "grad_norm": float(grad_norm),
                      "dead_restarts": restarted, "seconds": round(time.monotonic() - tick, 4), **out.metrics}
            if validation is not None and (step % t.validate_every == 0 or step == t.steps):
                record.update(validate(model, validation, t.validation_sizes))
            log.write(json.dumps(record) + "\n")
            log.flush()
            if on_metrics:
                on_metrics(record)
            progress.update(task, completed=step, info=f"loss {record['loss']:.4f} K~ {size}")
            if step % t.checkpoint_every == 0:
                last = checkpoint()
    if last is None or step % t.checkpoint_every != 0:
        last = checkpoint()
    return TrainResult(step=step, checkpoint=last, seconds=time.monotonic() - started)
