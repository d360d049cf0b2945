"""The training commands: train a model from a recipe, export a run as a model, train a context model."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import USER_ERRORS
from ..options import DEVICES
from .app import EXIT_FAILED, _say_error, main
from .options import _force


@main.command()
@click.option("--recipe", default="kodak-default", show_default=True, help="Built-in recipe name or a .toml file.")
@click.option(
    "--data",
    "data",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Image folder/file or CIFAR-10 tarball (repeatable); read in place.",
)
@click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Run directory (checkpoints, log.jsonl); an existing run resumes.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recipe value, e.g. train.steps=5000 or model.channels=96.",
)
@click.option(
    "--max-minutes", type=float, default=None, help="Stop (with a checkpoint) after this long; rerun to resume."
)
@click.option("--threads", type=int, default=None, help="CPU threads for torch (per process).")
@click.option(
    "--device",
    type=click.Choice(DEVICES),
    default="auto",
    show_default=True,
    help="Where to train; under torchrun each process takes the GPU of its LOCAL_RANK.",
)
def train(
    recipe: str,
    data: tuple[Path, ...],
    out_dir: Path,
    overrides: tuple[str, ...],
    max_minutes: float | None,
    threads: int | None,
    device: str,
) -> None:
    """Train (or resume) a RAQ model from a recipe.

    Data-parallel on several GPUs or CPU processes: torchrun --nproc_per_node N -m raqcodec train ...
    (NCCL on GPUs, gloo on the CPU; batch_size is per process).
    """
    import torch

    from ..codec import pick_device
    from ..errors import CodecError
    from ..train import build_sources, load_recipe
    from ..train import train as run_training

    if threads:
        torch.set_num_threads(threads)
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    try:
        where = pick_device(device)
        rec = load_recipe(recipe, parsed)
        source, validation = build_sources(rec, list(data))
    except (ValueError, TypeError, CodecError) as exc:
        _say_error(str(exc))
        sys.exit(2)
    result = run_training(
        rec,
        source,
        out_dir,
        validation=validation,
        max_minutes=max_minutes,
        show_progress=sys.stderr.isatty(),
        device=where,
    )
    click.echo(f"stopped at step {result.step}; checkpoint {result.checkpoint}")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--name", required=True, help="Model name (file stem).")
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("models"),
    show_default=True,
    help="Where to write NAME.safetensors and NAME.json.",
)
@click.option(
    "--data",
    "data",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Training data (as given to train): calibrates the exact decoder and is named in the card.",
)
@click.option("--description", default="", help="One line for the model card.")
@_force
def export(run_dir: Path, name: str, out_dir: Path, data: tuple[Path, ...], description: str, force: bool) -> None:
    """Freeze the newest checkpoint of a training run into a shipped model (weights + model card)."""
    from ..train.export import export_run

    target = out_dir / f"{name}.safetensors"
    for existing in (target, target.with_suffix(".json")):
        if existing.exists() and not force:
            raise click.UsageError(f"{existing} exists; pass --force to overwrite it")
    try:
        card = export_run(run_dir, name, out_dir, list(data), description)
    except (ValueError, OSError) as exc:
        _say_error(str(exc))
        sys.exit(EXIT_FAILED)
    click.echo(f"wrote {target} (fingerprint {card['fingerprint'][:16]}) and {target.with_suffix('.json')}")


@main.command("train-context")
@click.option("--model", default=None, help="Model name or .safetensors path whose index grids are learned.")
@click.option(
    "--data",
    "data",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Image folders/files (repeatable); read in place.",
)
@click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Run directory (grids, checkpoint, log.jsonl); an existing run resumes.",
)
@click.option("--steps", type=click.IntRange(1), default=12000, show_default=True)
@click.option("--batch", type=click.IntRange(1), default=1024, show_default=True, help="Positions per step.")
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--write-model",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="When done, write a copy of the model file with this context model to this path (and its card beside it).",
)
@click.option("--threads", type=int, default=None, help="CPU threads for torch.")
@_force
def train_context(
    model: str | None,
    data: tuple[Path, ...],
    out_dir: Path,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    write_model: Path | None,
    threads: int | None,
    force: bool,
) -> None:
    """Train (or resume) the context model that entropy-codes a model's index grids.

    The codec model itself is unchanged (same fingerprint); see docs/DESIGN.md, "Context model".
    """
    import torch

    from ..model import registry
    from ..train.context import ContextTrainConfig, install_context, prepare_grids
    from ..train.context import train_context as fit

    if threads:
        torch.set_num_threads(threads)
    if write_model is not None and write_model.exists() and not force:
        raise click.UsageError(f"{write_model} exists; pass --force to overwrite it")
    cfg = ContextTrainConfig(steps=steps, batch=batch, lr=lr, seed=seed)
    try:
        codec_model = registry.load(model)
        train_grids, valid_grids = prepare_grids(codec_model, list(data), out_dir, cfg)
    except USER_ERRORS + (ValueError,) as exc:
        _say_error(str(exc))
        sys.exit(EXIT_FAILED)
    net = fit(codec_model, train_grids, valid_grids, cfg, out_dir, log=lambda line: click.echo(line, err=True))
    if write_model is not None:
        assert codec_model.path is not None
        last = (out_dir / "log.jsonl").read_text(encoding="utf-8").splitlines()[-1]
        summary = {
            "steps": steps,
            "data": [str(p) for p in data],
            "train_grids": len(train_grids),
            "last_validation": json.loads(last),
        }
        crc = install_context(codec_model.path, net, write_model, summary)
        click.echo(f"wrote {write_model} (context checksum {crc:08x})")
