"""Fine-tune a shipped RAQ model with refinement stages (model v2 candidates, issue 20).

Warm start from a model file (default raq-photo): encoder and decoder are fine-tuned, the base stage keeps
the model's frozen RAQ sequence (so its codebooks, the adapter and the context model stay valid), and a
refinement stage (``--design scalar`` or ``--design rvq``, see ``raqcodec.nn.stages``) is trained from
scratch. Runs for a wall-clock budget, checkpoints to ``OUT/state.safetensors`` every few minutes and
resumes from it; ``OUT/log.jsonl`` has one line per logged step.

Loss, the same for both designs: mean over images of MSE / sg(MSE) (the gradient of ln MSE, so every
rate weighs the same in dB) + ``rate_weight`` * refinement bpp + a commitment term that keeps the
encoder on the frozen base codebooks. ``rate_weight`` 0.3 prices one bpp at 1.3 dB: at 1.5 (6.5 dB, the
slope of good codecs between 0.3 and 1 bpp on Kodak) the warm-started model, whose slope is far
shallower, found sending nothing cheapest and lost 1.5-2.7 dB at every rate within 1,500 steps.

    python -m raqcodec.train.stages --design scalar --data ../shared/data/train --out runs/scalar --minutes 40
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..model.files import read_model_file
from ..model.registry import resolve
from ..nn.quantizer import from_rows, nearest_indices, to_rows
from ..nn.raq import RAQModel
from ..nn.stages import ResidualVQ, ScalarRefinement
from .data import FolderSource, center_crops, list_images, load_rgb
from .state import load_training_state, read_info, save_training_state

HOLDOUT_EVERY = 50
# Scalar design: step level L means step STEP_MAX * 2^(-L/4) in latent units; channels are refined (and
# would be stored) in groups of GROUP_CHANNELS.
STEP_LEVELS = 32
STEP_MAX = 1.0
GROUP_CHANNELS = 8  # the same held-out photos as the base model's training (raqcodec.train.build_sources)


@dataclass
class StageRecipe:
    design: str = "scalar"  # "scalar" (design B) or "rvq" (design A)
    base_model: str = "raq-photo"
    batch_size: int = 8
    crop: int = 128
    scale_min: float = 0.5
    lr_autoencoder: float = 2e-4
    lr_stage: float = 1e-3
    warmup_steps: int = 100
    planned_steps: int = 4000  # cosine schedule length; the wall-clock budget may stop earlier
    rate_weight: float = 0.3
    commitment: float = 1.0
    k_min: int = 8
    k_max: int = 1024
    drop_refinement: float = 0.25  # share of batches trained on the base stage alone
    channel_group: int = 8  # scalar design: refinement is stored (and trimmed) in groups of this many channels
    truncate_groups: float = 0.5  # scalar design: share of refined images that keep only a prefix of groups
    level_max: int = 20  # scalar design: step levels 0..level_max are trained (step 1.0 down to 0.03)
    rvq_stages: int = 2
    rvq_size: int = 1024
    rvq_size_min: int = 16
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict) -> StageRecipe:
        """A recipe from a checkpoint; fields of earlier versions of this recipe are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def base_sequence(model_name: str) -> tuple[RAQModel, Tensor]:
    """Float model warm-started from the file, and the file's frozen sequence as floats (what the codec uses)."""
    source = read_model_file(resolve(model_name))
    model = RAQModel(source.config)
    weights = {k: v for k, v in source.tensors.items() if not k.startswith(("frozen.", "context."))}
    model.load_state_dict(weights, strict=False)
    frac = int(source.tensors["frozen.act_frac_bits"])
    return model, source.tensors["frozen.sequence"].double().div(2.0**frac).float()


def log_uniform_int(lo: int, hi: int, g: torch.Generator) -> int:
    return int(round(math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * float(torch.rand((), generator=g)))))


class StageTrainer:
    def __init__(self, recipe: StageRecipe) -> None:
        self.r = recipe
        self.model, self.sequence = base_sequence(recipe.base_model)
        self.model.adapter.requires_grad_(False)
        self.model.codebook.requires_grad_(False)
        cfg = self.model.cfg
        self.stage: ScalarRefinement | ResidualVQ
        if recipe.design == "scalar":
            # the base model stays frozen; the refinement's own encoder and decoder start as its copies
            self.model.requires_grad_(False)
            self.stage = ScalarRefinement(cfg, STEP_LEVELS)
            self.stage.encoder.load_state_dict(self.model.encoder.state_dict())
            self.stage.decoder.load_state_dict(self.model.decoder.state_dict(), strict=False)
            autoencoder = list(self.stage.encoder.parameters()) + list(self.stage.decoder.parameters())
            own = list(self.stage.prior.parameters()) + [self.stage.log_channel_step]
        else:
            self.stage = ResidualVQ(cfg.latent_dim, recipe.rvq_stages, recipe.rvq_size)
            autoencoder = list(self.model.encoder.parameters()) + list(self.model.decoder.parameters())
            own = list(self.stage.parameters())
        self.optimizer = torch.optim.AdamW(
            [
                {"params": autoencoder, "lr": recipe.lr_autoencoder, "base_lr": recipe.lr_autoencoder},
                {"params": own, "lr": recipe.lr_stage, "base_lr": recipe.lr_stage},
            ],
            weight_decay=0.0,
        )
        self.generator = torch.Generator().manual_seed(recipe.seed)
        self.step = 0
        self.commit_ref = 1.0

    def modules(self) -> torch.nn.ModuleDict:
        return torch.nn.ModuleDict({"encoder": self.model.encoder, "decoder": self.model.decoder, "stage": self.stage})

    def quantize_base(self, z: Tensor, size: int) -> Tensor:
        rows = to_rows(z.detach())
        book = self.sequence[:size]
        return from_rows(book[nearest_indices(rows, book)], z)

    def set_lr(self) -> None:
        r = self.r
        warm = min(1.0, (self.step + 1) / r.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, self.step / r.planned_steps)))
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * warm * (0.05 + 0.95 * cosine)

    def reconstruct(
        self, x: Tensor, size: int, level: Tensor | None, sizes: list[int] | None = None, channels: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(reconstruction, refinement bits per image, commitment, extra loss). ``level`` (N,): the scalar
        design's step level per image, None for the base stage alone; ``channels``: refined channels."""
        z = self.model.encoder(x)
        q1 = self.quantize_base(z, size)
        commitment = F.mse_loss(z, q1)
        n = z.shape[0]
        if isinstance(self.stage, ScalarRefinement):
            if level is None:  # the base stage alone: the frozen model, unchanged
                return self.model.decoder(q1), z.new_zeros(n), commitment.detach(), z.new_zeros(())
            step = STEP_MAX * torch.pow(2.0, -level.float() / 4)
            if channels is None:
                channels = torch.full((n,), z.shape[1], dtype=torch.long)
            y, bits = self.stage(self.stage.encoder(x), q1, step, channels)
            x_hat = self.stage.decoder(y, level + 1, channels // GROUP_CHANNELS)
            return x_hat, bits, commitment.detach(), z.new_zeros(())
        y, bits, extra = self.stage(z, q1, sizes or [])
        return self.model.decoder(y), bits, commitment, extra

    def train_step(self, x: Tensor) -> dict[str, float]:
        r, g = self.r, self.generator
        size = log_uniform_int(r.k_min, r.k_max, g)
        # the scalar design trains its refinement only: its base stage is the frozen model
        refine = isinstance(self.stage, ScalarRefinement) or float(torch.rand((), generator=g)) >= r.drop_refinement
        level, sizes, channels = None, None, None
        if isinstance(self.stage, ScalarRefinement):
            if refine:
                n, d = x.shape[0], self.model.cfg.latent_dim
                level = torch.randint(0, r.level_max + 1, (n,), generator=g)
                groups = d // r.channel_group
                prefix = torch.randint(1, groups, (n,), generator=g)
                truncate = torch.rand(n, generator=g) < r.truncate_groups
                channels = torch.where(truncate, prefix, torch.full_like(prefix, groups)) * r.channel_group
        elif refine:
            count = 1 + int(torch.randint(r.rvq_stages, (1,), generator=g))
            sizes = [log_uniform_int(r.rvq_size_min, r.rvq_size, g) for _ in range(count)]
        self.set_lr()
        x_hat, bits, commitment, extra = self.reconstruct(x, size, level, sizes, channels)
        mse = ((x_hat - x) ** 2).flatten(1).mean(1)
        pixels = x.shape[2] * x.shape[3]
        bpp = bits / pixels
        if self.step == 0:
            self.commit_ref = float(commitment.detach())
        loss = (mse / mse.detach()).mean() + r.rate_weight * bpp.mean() + extra
        if commitment.requires_grad:  # a trained base encoder stays on its frozen codebooks
            loss = loss + r.commitment * commitment / self.commit_ref
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.modules().parameters(), 5.0)
        self.optimizer.step()
        self.step += 1
        return {
            "step": self.step,
            "size": size,
            "refine": refine,
            "psnr": float((-10 * torch.log10(mse.detach())).mean()),
            "bpp_refinement": float(bpp.detach().mean()),
            "commitment": float(commitment.detach()),
        }

    # -- checkpoints -----------------------------------------------------------------------------------
    def save(self, path: Path, elapsed: float) -> None:
        info = {"step": self.step, "elapsed_s": elapsed, "commit_ref": self.commit_ref, "recipe": asdict(self.r)}
        save_training_state(
            path,
            self.modules(),
            self.optimizer,
            {"rng.data": self.generator.get_state(), "rng.torch": torch.get_rng_state()},
            info,
        )

    def load(self, path: Path) -> float:
        info = load_training_state(path, self.modules(), self.optimizer, self.generator)
        self.step, self.commit_ref = int(info["step"]), float(info["commit_ref"])
        return float(info.get("elapsed_s", 0.0))


def split_photos(data: list[Path]) -> tuple[list[Path], list[Path]]:
    files = list_images(data)
    held = files[::HOLDOUT_EVERY]
    return [p for p in files if p not in set(held)], held


@torch.no_grad()
def validate(trainer: StageTrainer, crops: Tensor) -> dict[str, float]:
    """Held-out PSNR/bpp at a few operating points (float path, ideal refinement bits)."""
    out: dict[str, float] = {}
    trainer.modules().eval()
    pixels = crops.shape[2] * crops.shape[3]
    points: list[tuple[str, int, Tensor | None, list[int] | None]] = [
        ("k64", 64, None, None),
        ("k1024", 1024, None, None),
    ]
    if isinstance(trainer.stage, ScalarRefinement):
        for step_level in (4, 10, 16):
            points.append((f"k256_level{step_level}", 256, torch.full((crops.shape[0],), step_level), None))
    else:
        points += [("k256_r256", 256, None, [256]), ("k1024_r1024x2", 1024, None, [1024, 1024])]
    for name, size, level, sizes in points:
        x_hat, bits, _, _ = trainer.reconstruct(crops, size, level, sizes)
        mse = ((x_hat.clamp(0, 1) - crops) ** 2).flatten(1).mean(1)
        out[f"{name}_psnr"] = float((-10 * torch.log10(mse)).mean())
        out[f"{name}_bpp"] = float((bits / pixels).mean())
    trainer.modules().train()
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--design", choices=["scalar", "rvq"], default="scalar")
    p.add_argument("--data", type=Path, nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--minutes", type=float, default=0.0, help="wall-clock budget of this invocation")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--planned-steps", type=int, default=None)
    p.add_argument("--checkpoint-minutes", type=float, default=5.0)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a recipe field of a new run, e.g. lr_autoencoder=5e-4",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    state = args.out / "state.safetensors"
    # a resumed run keeps its recipe; only its length may be changed
    recipe = StageRecipe.from_dict(read_info(state)["recipe"]) if state.is_file() else StageRecipe(design=args.design)
    if args.planned_steps:
        recipe.planned_steps = args.planned_steps
    for item in [] if state.is_file() else args.set:
        key, _, value = item.partition("=")
        current = getattr(recipe, key)  # AttributeError names an unknown field
        setattr(recipe, key, type(current)(value))
    args.out.mkdir(parents=True, exist_ok=True)
    trainer = StageTrainer(recipe)
    elapsed = trainer.load(state) if state.is_file() else 0.0
    train_files, held = split_photos(args.data)
    source = FolderSource.from_paths(train_files, recipe.crop, recipe.scale_min)
    crops = center_crops([load_rgb(p, 512) for p in held], 256)[:16]
    # line-buffered: every record is on disk as it is written (an interrupted run exits without teardown)
    log = (args.out / "log.jsonl").open("a", encoding="utf-8", buffering=1)
    start = time.monotonic()
    last_save = start
    if trainer.step == 0:
        log.write(json.dumps({"step": 0, "validation": validate(trainer, crops)}) + "\n")
    while time.monotonic() - start < args.minutes * 60 and trainer.step < recipe.planned_steps:
        metrics: dict[str, Any] = trainer.train_step(source.batch(recipe.batch_size, trainer.generator))
        if trainer.step % 50 == 0:
            metrics["elapsed_s"] = elapsed + time.monotonic() - start
            if trainer.step % 500 == 0:
                metrics["validation"] = validate(trainer, crops)
            log.write(json.dumps(metrics) + "\n")
            log.flush()
        if time.monotonic() - last_save > args.checkpoint_minutes * 60:
            trainer.save(state, elapsed + time.monotonic() - start)
            last_save = time.monotonic()
    trainer.save(state, elapsed + time.monotonic() - start)
    log.write(json.dumps({"step": trainer.step, "validation": validate(trainer, crops), "end": True}) + "\n")
    log.close()


if __name__ == "__main__":
    main()
