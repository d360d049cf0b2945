"""The training loop: joint RAQ training (or fixed-rate), resumable exactly from its checkpoints.

Every ``checkpoint_every`` steps the whole state (weights, EMA buffers, optimizer, RNG) goes to
``<out>/step-XXXXXXXX.safetensors``; ``train`` picks up the newest one, so an interrupted run continues
with the same batches, K~ draws and losses as an uninterrupted one. Metrics go to ``<out>/log.jsonl``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from ..eval.metrics import psnr
from ..nn.quantizer import to_rows
from ..nn.raq import RAQModel
from ..progress import progress_bar
from .data import BatchSource
from .distributed import Cluster
from .recipe import Recipe
from .state import latest_checkpoint, load_training_state, rng_key, save_training_state
from .warmstart import warm_start


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


def _mse_8bit(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error of reconstructions in [0, 1] against the originals, in 8-bit units (at least
    1e-10, so that ``psnr`` of a perfect reconstruction stays finite)."""
    return torch.mean(((a.clamp(0, 1) - b) * 255) ** 2).clamp(min=1e-10)


@torch.no_grad()
def validate(model: RAQModel, images: torch.Tensor, sizes: list[int]) -> dict[str, float]:
    """PSNR of held-out crops at each K~ of ``sizes`` (and at the base codebook)."""
    model.eval()
    try:
        out = {"psnr_base": float(psnr(_mse_8bit(model.reconstruct(images, model.codebook.embedding), images)))}
        sequence = model.adapter.generate(model.codebook.embedding) if sizes else model.codebook.embedding
        for k in sizes:
            if k <= sequence.shape[0]:
                out[f"psnr_k{k}"] = float(psnr(_mse_8bit(model.reconstruct(images, sequence[:k]), images)))
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
    model: RAQModel  # the trained model (this rank's copy; identical on every rank)


def train(
    recipe: Recipe,
    source: BatchSource,
    out_dir: Path,
    validation: torch.Tensor | None = None,
    max_minutes: float | None = None,
    max_steps: int | None = None,
    show_progress: bool = True,
    on_metrics: Callable[[dict], None] | None = None,
    device: str | torch.device = "cpu",
) -> TrainResult:
    """Run (or resume) training until ``recipe.train.steps``, ``max_steps`` or ``max_minutes``.

    Started by torchrun, every process calls this: ranks draw different batches (seed + rank), rank 0
    decides K~ and when to stop, logs, validates and writes checkpoints (with every rank's RNG state).
    """
    t = recipe.train
    device = torch.device(device)
    cluster = Cluster.from_environment(device)
    if device.type == "cuda":
        device = torch.device("cuda", cluster.local_rank if cluster.active else (device.index or 0))
        torch.cuda.set_device(device)
    torch.manual_seed(t.seed + cluster.rank)
    generator = torch.Generator().manual_seed(t.seed + cluster.rank)
    model = RAQModel(recipe.model).to(device)
    if t.mode == "fixed":
        model.adapter.requires_grad_(False)  # the fixed-rate baseline trains the base path only
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)

    step = 0
    resume_from = latest_checkpoint(out_dir) if out_dir.exists() else None
    if resume_from is not None:
        info = load_training_state(resume_from, model, optimizer, generator, rank=cluster.rank)
        step = int(info["step"])
    elif t.init_from:
        warm_start(model, t.init_from, latents_per_batch=t.batch_size * (t.crop // recipe.model.downsampling) ** 2)
    if cluster.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if resume_from is not None:
            _truncate_log(out_dir / "log.jsonl", step)
        (out_dir / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2))
    cluster.barrier()
    # DDP averages gradients; buffers (the EMA codebook) are kept in step by hand below.
    net = (
        DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )
        if cluster.active
        else model
    )
    codebook = model.codebook
    ema_buffers = (codebook.embedding, codebook.embedding_sum, codebook.cluster_size)
    stop_at = min(t.steps, max_steps) if max_steps is not None else t.steps
    deadline = time.monotonic() + max_minutes * 60 if max_minutes is not None else math.inf
    started = time.monotonic()
    model.train()
    if validation is not None:
        validation = validation.to(device)

    def checkpoint() -> Path:
        path = out_dir / f"step-{step:08d}.safetensors"
        rng: dict[str, torch.Tensor] = {}
        for kind, state in (("data", generator.get_state()), ("torch", torch.get_rng_state())):
            for rank, part in enumerate(cluster.gather_bytes(state, device)):
                rng[rng_key(kind, rank)] = part
        if cluster.is_main:
            save_training_state(
                path,
                model,
                optimizer,
                rng,
                {"step": step, "recipe": recipe.to_dict(), "world_size": cluster.world_size},
            )
            for old in sorted(out_dir.glob("step-*.safetensors"))[:-2]:  # keep the two newest
                old.unlink()
        return path

    progress = progress_bar(
        show_progress and cluster.is_main, label="[bold]train[/]", fields="{task.fields[info]}", eta=True
    )
    last = resume_from
    # line-buffered: every record is on disk as it is written (an interrupted run exits without teardown)
    log = (out_dir / "log.jsonl").open("a", encoding="utf-8", buffering=1) if cluster.is_main else None
    try:
        with progress:
            task = progress.add_task("train", total=stop_at, completed=step, info="")
            while step < stop_at and not cluster.broadcast_int(int(time.monotonic() >= deadline), device):
                tick = time.monotonic()
                x = source.batch(t.batch_size, generator).to(device)
                if not bool(codebook.initialized):
                    with torch.no_grad():
                        codebook.initialize_from(to_rows(model.encoder(x)), generator)
                    cluster.broadcast_(*ema_buffers)
                size = draw_codebook_size(recipe, generator) if t.mode == "raq" else None
                if size is not None:
                    size = cluster.broadcast_int(size, device)  # every rank trains the same K~
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(recipe, step)
                out = net(x, size)
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
                optimizer.step()
                counts, sums = codebook.ema_statistics(out.rows, out.base_indices)
                cluster.sum_(counts, sums)  # the EMA sees the global batch
                restarted = codebook.apply_statistics(counts, sums, out.rows, generator)
                cluster.broadcast_(*ema_buffers)  # dead-code restarts drew rank 0's latents
                step += 1
                record = {
                    "step": step,
                    "k": size,
                    "lr": learning_rate(recipe, step - 1),
                    "grad_norm": float(grad_norm),
                    "dead_restarts": restarted,
                    "seconds": round(time.monotonic() - tick, 4),
                    **out.metrics,
                }
                if cluster.is_main and validation is not None and (step % t.validate_every == 0 or step == t.steps):
                    record.update(validate(model, validation, t.validation_sizes))
                if log is not None:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                if on_metrics and cluster.is_main:
                    on_metrics(record)
                progress.update(task, completed=step, info=f"loss {record['loss']:.4f} K~ {size}")
                if step % t.checkpoint_every == 0:
                    last = checkpoint()
        if last is None or step % t.checkpoint_every != 0:
            last = checkpoint()
    finally:
        if log is not None:
            log.close()
    cluster.barrier()
    return TrainResult(step=step, checkpoint=last, seconds=time.monotonic() - started, model=model)
