"""Training the context model on index grids of a frozen codec model (``raqcodec train-context``).

The codec model is not changed: the context model learns the statistics of the index grids it produces,
at every codebook size. Loss: cross-entropy in bits per index. The result is frozen to integers
(``raqcodec.entropy.context.freeze``) and stored in the model file beside the codec's tensors.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..entropy.context import ACT_BITS, ACT_LIMIT, EXP_STEPS, LOG_PREC_BITS, LOG_PREC_HIGH, LOG_PREC_LOW, PREFIX
from ..entropy.order0 import empirical_entropy_bits
from ..entropy.scan import context_slots, pass_map
from ..io.atomic import atomic_path
from ..model.exact import quantize_tensor, weight_frac_bits
from ..model.files import CONTEXT_PREFIX, read_model_file, write_model_file
from ..model.loaded import CodecModel
from ..nn.context import ContextConfig, ContextNet
from .context_data import collect_grids, load_grids, save_grids
from .data import list_images


@dataclass(frozen=True)
class ContextTrainConfig:
    steps: int = 4000
    batch: int = 1024
    lr: float = 2e-3
    seed: int = 0
    eval_every: int = 500
    sizes_per_image: int = 5
    valid_fraction: float = 0.05


@cache
@torch.no_grad()
def freeze(net: ContextNet) -> dict[str, Tensor]:
    """Integer tensors of a trained network (the ``context.*`` entries of a model file)."""

    def weight(name: str, value: Tensor) -> dict[str, Tensor]:
        bits = weight_frac_bits(value)
        return {
            name: quantize_tensor(value, bits).to(torch.int32),
            f"{name}_bits": torch.tensor(bits, dtype=torch.int32),
        }

    def bias(name: str, value: Tensor) -> dict[str, Tensor]:
        return {name: quantize_tensor(value, ACT_BITS).clamp(-ACT_LIMIT, ACT_LIMIT).to(torch.int32)}

    t: dict[str, Tensor] = {}
    t |= weight("slot_weight", net.slot_weight)
    t |= weight("proj", net.proj)
    t |= weight("hidden_weight", net.hidden.weight)
    t |= weight("head_weight", net.head.weight)
    t |= bias("missing", net.missing) | bias("pass_bias", net.pass_bias) | bias("size_bias", net.size_bias)
    t |= bias("hidden_bias", net.hidden.bias) | bias("head_bias", net.head.bias)
    steps = torch.arange(EXP_STEPS, dtype=torch.float64)
    t["exp_lut"] = torch.round(2.0**16 * torch.exp(-steps / 16)).to(torch.int64)
    # factor = e^(j/64) * 16 * 2^-24: 1/16 nats per squared distance at 2^-2*ACT_BITS = 2^-24
    j = torch.arange(-LOG_PREC_LOW, LOG_PREC_HIGH + 1, dtype=torch.float64)
    mantissa, exponent = torch.frexp(torch.exp(j / (1 << LOG_PREC_BITS)) * 2.0 ** (4 - 2 * ACT_BITS))
    t["scale_mantissa"] = torch.round(mantissa * 256).to(torch.int64)  # 128..256
    t["scale_exponent"] = (exponent - 8).to(torch.int64)
    t["components"] = torch.tensor(net.cfg.components, dtype=torch.int32)
    return {PREFIX + k: v.contiguous() for k, v in t.items()}


def _passes(h: int, w: int) -> np.ndarray:
    return pass_map(h, w)


def grid_samples(
    grid: np.ndarray, size: int, positions: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(slots (n, S), pass ids (n,), targets (n,)) for the given flat positions (default: all)."""
    h, w = grid.shape
    passes = _passes(h, w)
    flat = np.arange(h * w) if positions is None else positions
    ys, xs = flat // w, flat % w
    return context_slots(grid, passes, ys, xs, size), passes[ys, xs], grid[ys, xs]


def bits(
    net: ContextNet, book: torch.Tensor, grid: np.ndarray, size: int, positions: np.ndarray | None = None
) -> torch.Tensor:
    """Total cross-entropy in bits of the chosen positions of a grid under the float model."""
    slots, pass_ids, targets = (torch.from_numpy(a) for a in grid_samples(grid, size, positions))
    logp = net.log_probs(book, slots, pass_ids, size)
    return -logp.gather(1, targets[:, None]).sum() / math.log(2)


def evaluate(
    net: ContextNet, books: Callable[[int], torch.Tensor], grids: list[tuple[int, np.ndarray]]
) -> dict[str, float]:
    """Ratio of model bits to order-0 entropy, summed per size band (K~ < 32, < 256, >= 256)."""
    sums: dict[str, list[float]] = {}
    with torch.no_grad():
        for size, grid in grids:
            band = "k<32" if size < 32 else "k<256" if size < 256 else "k>=256"
            acc = sums.setdefault(band, [0.0, 0.0])
            acc[0] += float(bits(net, books(size), grid, size))
            acc[1] += empirical_entropy_bits(grid, size)
    return {band: round(b / h0, 4) for band, (b, h0) in sorted(sums.items())}


def train_context(
    model: CodecModel,
    train: list[tuple[int, np.ndarray]],
    valid: list[tuple[int, np.ndarray]],
    cfg: ContextTrainConfig,
    out: Path,
    net_cfg: ContextConfig | None = None,
    log: Callable[[str], None] = print,
) -> ContextNet:
    """Train (resuming from ``out/context.safetensors`` if present); logs JSONL to ``out/log.jsonl``."""
    torch.manual_seed(cfg.seed)
    net = ContextNet(net_cfg or ContextConfig(latent_dim=model.config.latent_dim))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "context.safetensors"
    start = 0
    if ckpt.exists():
        state = load_file(str(ckpt))
        net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        start = int(json.loads((out / "state.json").read_text())["step"])
        log(f"resumed at step {start}")
    books: dict[int, torch.Tensor] = {}

    def book(size: int) -> torch.Tensor:
        if size not in books:
            books[size] = model.float_codebook("seq2seq", size).cpu()
        return books[size]

    rng = np.random.default_rng(cfg.seed + start)
    started = time.time()
    for step in range(start, cfg.steps):
        for group in opt.param_groups:  # cosine decay to 5% of the peak
            group["lr"] = cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))
        size, grid = train[int(rng.integers(len(train)))]
        positions = rng.choice(grid.size, size=min(cfg.batch, grid.size), replace=False)
        loss = bits(net, book(size), grid, size, positions) / len(positions)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            ratios = evaluate(net, book, valid)
            record = {
                "step": done,
                "train_bits": round(float(loss.detach()), 4),
                "valid_ratio_to_order0": ratios,
                "seconds": round(time.time() - started, 1),
            }
            with open(out / "log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            log(json.dumps(record))
            with atomic_path(ckpt) as tmp:
                save_file({f"net.{k}": v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
            (out / "state.json").write_text(json.dumps({"step": done, "config": net.cfg.to_dict()}))
    return net


def prepare_grids(
    model: CodecModel, data: list[Path], out: Path, cfg: ContextTrainConfig
) -> tuple[list[tuple[int, np.ndarray]], list[tuple[int, np.ndarray]]]:
    """(train, validation) grids, cached in ``out`` so a resumed run sees the same data. Validation
    holds out whole photos (the last ``valid_fraction`` of the sorted file list)."""
    out.mkdir(parents=True, exist_ok=True)
    cached = out / "train_grids.npz", out / "valid_grids.npz"
    if all(p.exists() for p in cached):
        return load_grids(cached[0]), load_grids(cached[1])
    files = list_images(data)
    if len(files) < 2:
        raise ValueError("need at least two images to train a context model")
    held = max(1, round(len(files) * cfg.valid_fraction))
    train = collect_grids(model, files[:-held], cfg.sizes_per_image, cfg.seed)
    valid = collect_grids(model, files[-held:], cfg.sizes_per_image, cfg.seed + 1)
    save_grids(cached[1], valid)
    save_grids(cached[0], train)
    return train, valid


def install_context(model_path: Path, net: ContextNet, target: Path, summary: dict[str, object]) -> int:
    """Write ``target``: the model file at ``model_path`` with this context model (frozen) in place of any
    previous one. The fingerprint does not change. Returns the context checksum."""
    from ..entropy.context import checksum

    file = read_model_file(model_path)
    tensors = {k: v for k, v in file.tensors.items() if not k.startswith(CONTEXT_PREFIX)}
    tensors |= freeze(net)
    write_model_file(target, file.name, file.config, tensors)
    card_path = target.with_suffix(".json")
    source_card = model_path.with_suffix(".json")
    card = json.loads(source_card.read_text(encoding="utf-8")) if source_card.exists() else {"name": file.name}
    card["context_model"] = {**summary, "checksum": f"{checksum(tensors):08x}", "config": net.cfg.to_dict()}
    with atomic_path(card_path) as tmp:
        tmp.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return checksum(tensors)


__all__ = ["ContextTrainConfig", "train_context", "evaluate", "grid_samples", "prepare_grids", "install_context"]
