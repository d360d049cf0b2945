"""Fine-tune one part of a shipped model, the rest frozen, then write it as a new model file.

``--part decoder`` (model v2's base stage): the encoder, the base codebook and the adapter stay frozen,
so every index grid, every codebook and the context model (which sees only indices and codebooks) stay
exactly what they were: only the picture the decoder paints from a grid improves. Crops of the training
photos are quantized with the file's frozen codebook sequence at sizes drawn log-uniformly from the
trained range (nearest neighbour, as the context model's training grids), and the decoder is trained on
MSE. A low peak rate matters: at 2e-4 the decoder lost 0.6 dB at K~=1024 within 500 steps (fresh Adam
moments move every weight by the full step); at 3e-5, 4,000 steps (33 CPU-minutes, 1 thread, batch 8 of
128 px) gained 0.13 / 0.12 / 0.07 / 0.05 dB at K~ = 16 / 64 / 256 / 1024 on 16 held-out crops.

``--part encoder`` (amortized refinement, issue 21): the decoder, codebooks and context model stay
frozen and the encoder learns latents whose *nearest* codewords decode closer, which is what the
encoder-side refinement search (``raqcodec.model.refine``) finds per image at a large cost in time. The
loss is the MSE of the frozen decoder's image from the straight-through quantized latents plus the
model's commitment term (latents stay near the codewords they pick). Decoding is untouched, but the
encoder's tensors are part of the model fingerprint, so the export is a new model. Validation also
reports the grids' bits under the frozen context model: a grid that decodes closer but codes worse is
no gain under a budget.

    python -m raqcodec.train.finetune --part decoder --base raq-photo --data ../shared/data/train \
        --out runs/decoder
    python -m raqcodec.train.finetune --part decoder --base raq-photo --data ../shared/data/train \
        --out runs/decoder --export models/raq-photo-dec.safetensors

A run resumes from ``OUT/state.safetensors`` (the part's weights, optimizer, step, random state) and logs
JSONL to ``OUT/log.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..entropy.context_coding import estimated_bits
from ..io.atomic import atomic_path
from ..model.exact import calibrate_act_frac_bits, decoder_weight_bits
from ..model.files import read_model_file, write_model_file
from ..model.loaded import CodecModel
from ..model.registry import load as load_codec
from ..model.registry import resolve
from ..nn.quantizer import from_rows, nearest_indices, to_rows
from ..nn.raq import RAQModel
from .data import FolderSource, center_crops, load_rgb
from .export import calibration_batch
from .stages import base_sequence, log_uniform_int, split_photos

VALIDATION_SIZES = (16, 64, 256, 1024)
PARTS = ("decoder", "encoder")


def quantize(z: Tensor, sequence: Tensor, size: int) -> Tensor:
    """Latents (N, d, h, w) replaced by their nearest codewords of the first ``size`` of ``sequence``."""
    book = sequence[:size]
    return from_rows(book[nearest_indices(to_rows(z), book)], z)


@torch.no_grad()
def validate(model: RAQModel, sequence: Tensor, crops: Tensor, coder: CodecModel | None = None) -> dict[str, float]:
    """Held-out PSNR (dB, float path, clamped output) at the VALIDATION_SIZES the model has; with
    ``coder`` (the frozen model file) also the nearest-neighbour grids' bits per pixel under its context
    model."""
    model.eval()
    z = model.encoder(crops)
    out = {}
    for size in (s for s in VALIDATION_SIZES if s <= model.cfg.k_max):
        mse = ((model.decoder(quantize(z, sequence, size)).clamp(0, 1) - crops) ** 2).flatten(1).mean(1)
        out[f"k{size}"] = round(float((-10 * torch.log10(mse)).mean()), 4)
        if coder is not None and coder.context is not None:
            book = sequence[:size]
            codebook = coder.codebook("seq2seq", size)
            bits = 0.0
            for latents in z:
                rows = to_rows(latents[None])
                grid = nearest_indices(rows, book).view(latents.shape[1:]).numpy()
                bits += estimated_bits(coder.context, codebook, grid)
            out[f"bpp{size}"] = round(bits / (crops.shape[0] * crops.shape[2] * crops.shape[3]), 5)
    model.train()
    return out


def _trainable(model: RAQModel, part: str) -> torch.nn.Module:
    return model.decoder if part == "decoder" else model.encoder


def train(args: argparse.Namespace) -> None:
    model, sequence = base_sequence(args.base)
    model.requires_grad_(False)
    part = _trainable(model, args.part)
    part.requires_grad_(True)
    coder = load_codec(args.base) if args.part == "encoder" else None
    k_lo, k_hi = model.cfg.k_min, model.cfg.k_max
    optimizer = torch.optim.AdamW(part.parameters(), lr=args.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(args.seed)
    step = 0
    prefix = f"{args.part}."
    args.out.mkdir(parents=True, exist_ok=True)
    state_path = args.out / "state.safetensors"
    if state_path.exists():
        state = load_file(str(state_path))
        part.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
        optimizer.load_state_dict(torch.load(args.out / "optimizer.pt", weights_only=True))
        step = int(state["step"])
        generator.set_state(state["rng"])
    train_photos, held = split_photos(args.data)
    source = FolderSource.from_paths(train_photos, args.crop, 0.5)
    crops = center_crops([load_rgb(p, 512) for p in held], args.validation_crop)[: args.validation_crops]
    # line-buffered: every record is on disk as it is written (an interrupted run exits without teardown)
    log = (args.out / "log.jsonl").open("a", encoding="utf-8", buffering=1)
    if step == 0:
        log.write(json.dumps({"step": 0, "validation": validate(model, sequence, crops, coder)}) + "\n")

    def save() -> None:
        tensors = {f"{prefix}{k}": v.contiguous() for k, v in part.state_dict().items()}
        tensors |= {"step": torch.tensor(step), "rng": generator.get_state()}
        with atomic_path(state_path) as tmp:
            save_file(tensors, str(tmp))
        with atomic_path(args.out / "optimizer.pt") as tmp:
            torch.save(optimizer.state_dict(), tmp)

    def loss_of(x: Tensor, size: int) -> Tensor:
        if args.part == "decoder":
            with torch.no_grad():
                quantized = quantize(model.encoder(x), sequence, size)
            return ((model.decoder(quantized) - x) ** 2).mean()
        z = model.encoder(x)
        with torch.no_grad():
            chosen = quantize(z, sequence, size)
        passed = z + (chosen - z).detach()  # straight through: the decoder sees the codewords
        commitment = model.cfg.commitment * ((z - chosen) ** 2).mean()
        return ((model.decoder(passed) - x) ** 2).mean() + commitment

    started = last_save = time.monotonic()
    recent: list[float] = []
    while step < args.steps and time.monotonic() - started < args.minutes * 60:
        warm = min(1.0, (step + 1) / args.warmup)
        for group in optimizer.param_groups:  # cosine to 5% of the peak
            group["lr"] = args.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        x = source.batch(args.batch, generator)
        loss = loss_of(x, log_uniform_int(k_lo, k_hi, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        recent.append(float(-10 * torch.log10(loss.detach())))
        if step % args.validate_every == 0 or step == args.steps:
            record = {
                "step": step,
                "train_psnr": round(sum(recent) / len(recent), 4),
                "validation": validate(model, sequence, crops, coder),
                "seconds": round(time.monotonic() - started, 1),
            }
            log.write(json.dumps(record) + "\n")
            log.flush()
            recent = []
        if time.monotonic() - last_save > args.checkpoint_minutes * 60:
            save()
            last_save = time.monotonic()
    save()
    log.close()


def export(args: argparse.Namespace) -> str:
    """Write the base model file with the fine-tuned part; every other tensor is copied. A decoder keeps
    the file's frozen codebook sequence and activation scale (so the same grids, codebooks and context
    model) and gets its integer weight scales; export refuses when it would saturate at that scale. An
    encoder needs nothing frozen: it only chooses indices."""
    source = read_model_file(resolve(args.base))
    model, sequence = base_sequence(args.base)
    part = _trainable(model, args.part)
    prefix = f"{args.part}."
    state = load_file(str(args.out / "state.safetensors"))
    part.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    model.eval()
    replaced = (prefix, "frozen.weight_bits.") if args.part == "decoder" else (prefix,)
    tensors = {k: v for k, v in source.tensors.items() if not k.startswith(replaced)}
    tensors |= {f"{prefix}{k}": v.detach().clone().contiguous() for k, v in part.state_dict().items()}
    if args.part == "decoder":
        frac = int(source.tensors["frozen.act_frac_bits"])
        calibration = calibration_batch(args.data)  # the crops ``raqcodec export`` calibrates with
        with torch.no_grad():
            z = model.encoder(calibration)
            probes = [quantize(z, sequence, size) for size in (model.cfg.k_min, model.cfg.k_max)]
            probes.append(sequence.t()[None, :, :, None].contiguous())
            headroom = min(calibrate_act_frac_bits(model.decoder, p) for p in probes)
        if headroom < frac:
            raise SystemExit(f"the fine-tuned decoder needs activation scale 2^-{headroom}, the file has 2^-{frac}")
        for layer, bits in decoder_weight_bits(model.decoder).items():
            tensors[f"frozen.weight_bits.{layer}"] = torch.tensor(bits, dtype=torch.int32)
    return write_model_file(args.export, args.export.stem, source.config, tensors)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=PARTS, required=True, help="what is trained; everything else is frozen")
    p.add_argument("--base", default="raq-photo", help="the model fine-tuned")
    p.add_argument("--data", type=Path, nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True, help="run folder (state, log); an existing run resumes")
    p.add_argument("--steps", type=int, default=4000, help="length of the cosine schedule")
    p.add_argument("--minutes", type=float, default=math.inf, help="stop (with a checkpoint) after this long")
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--validate-every", type=int, default=250)
    p.add_argument("--validation-crops", type=int, default=16, help="held-out photos validated on")
    p.add_argument("--validation-crop", type=int, default=256, help="side of their centre crops")
    p.add_argument("--checkpoint-minutes", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--export", type=Path, default=None, help="write the model file here instead of training")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.export is not None:
        print(json.dumps({"fingerprint": export(args), "file": str(args.export)}))
    else:
        train(args)


if __name__ == "__main__":
    main()
