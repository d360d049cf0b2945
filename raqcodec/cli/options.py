"""Option values checked before anything heavy is imported, and the options several commands share (their
choices are the library's constants)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import USER_ERRORS
from ..options import (
    DEVICES,
    is_positive_bpp,
    is_positive_number,
    size_in_range,
)

# -- option values: checked before anything heavy is imported ---------------------------------------------


def _positive_number(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not is_positive_bpp(value):
        raise click.BadParameter(f"must be a positive number of bits per pixel, got {value}")
    return value


def _positive_decibels(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not is_positive_number(value):
        raise click.BadParameter(f"must be a positive number of dB, got {value}")
    return value


def _check_model(model: str | None) -> None:
    """An unknown --model is a usage error (exit 2), found without loading anything."""
    from ..model import registry

    try:
        registry.resolve(model)
    except USER_ERRORS as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from None


def _check_codebook_size(size: int, model: str | None) -> None:
    from ..model import registry

    try:
        lo, hi = registry.coding_range(model)
    except USER_ERRORS as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from None
    if not size_in_range(size, (lo, hi)):
        name = model or registry.DEFAULT_MODEL
        raise click.BadParameter(
            f"{size} is outside model {name}'s codebook sizes {lo}..{hi}", param_hint="'-k' / '--codebook-size'"
        )


def _check_quiet_verbose(quiet: bool, verbose: bool) -> None:
    if quiet and verbose:
        raise click.UsageError("-q and -v do not go together")


def _check_stdout(output: str | None, as_json: bool) -> None:
    if output != "-":
        return
    if as_json:
        raise click.UsageError("--json and -o - would both write to standard output")
    if sys.stdout.isatty():
        raise click.UsageError("not writing binary data to a terminal; redirect standard output, or use -o FILE")


# -- shared options --------------------------------------------------------------------------------------

_device = click.option(
    "--device",
    type=click.Choice(DEVICES),
    default="auto",
    show_default=True,
    help="Where the networks run; every device decodes to the same pixels.",
)
_force = click.option("-f", "--force", is_flag=True, help="Overwrite existing outputs.")
_json_per_file = click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file on stdout.")


class _InputPath(click.Path):
    """An existing path, ``-`` (stdin), or a glob pattern (* ? [) the shell left unexpanded: raqcodec.batch.plan
    expands it."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from ..batch.jobs import GLOB_MAGIC

        if isinstance(value, str) and GLOB_MAGIC.search(value) and not os.path.lexists(value):
            return value
        return super().convert(value, param, ctx)


def _shard(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    from ..batch.plan import parse_shard

    if value is None:
        return None
    try:
        return parse_shard(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


_tree_inputs = click.argument("inputs", nargs=-1, required=True, type=_InputPath(exists=True, allow_dash=True))
_batch_force = click.option(
    "-f",
    "--force",
    is_flag=True,
    help="Redo raqcodec's own complete outputs in a batch (skipped otherwise), and "
    "replace a file raqcodec did not write when -o FILE names it.",
)
_jobs = click.option(
    "-j",
    "--jobs",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Worker processes (each loads the model once and uses one torch thread).",
)
_shard_option = click.option(
    "--shard",
    metavar="I/N",
    callback=_shard,
    help="Do only part I of N (1-based) of the inputs, chosen by a hash of each "
    "input's path relative to its folder: N machines, one part each.",
)
_quiet = click.option(
    "-q", "--quiet", is_flag=True, help="No per-file lines, notes, progress bar or summary; errors still print."
)
_verbose = click.option("-v", "--verbose", is_flag=True, help="Also print the seconds of each stage per file.")


# -- rate-distortion -----------------------------------------------------------------------------------


def _number_list(value: str | None, kind: type, option: str) -> list[Any] | None:
    """A comma-separated list of positive numbers (floats or ints), or None when not given."""
    if value is None:
        return None
    try:
        numbers = [kind(item) for item in value.split(",") if item.strip()]
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated {'integers' if kind is int else 'numbers'}, got {value!r}", param_hint=option
        ) from None
    if not numbers or any(not (n > 0 and n != float("inf")) for n in numbers):
        raise click.BadParameter(f"expected positive values, got {value!r}", param_hint=option)
    return sorted(set(numbers))


def _name_list(value: str, allowed: tuple[str, ...], option: str) -> list[str]:
    names = [item.strip().lower() for item in value.split(",") if item.strip()]
    if names == ["none"]:
        return []
    bad = [n for n in names if n not in allowed]
    if bad:
        raise click.BadParameter(f"unknown {', '.join(bad)} (choose from {', '.join(allowed)})", param_hint=option)
    return list(dict.fromkeys(names))


def _check_new_files(paths: list[Path | None], force: bool) -> None:
    given = [p for p in paths if p is not None]
    if len({p.resolve() for p in given}) < len(given):
        raise click.UsageError("the output files must differ from each other")
    for path in given:
        if path.is_dir():
            raise click.UsageError(f"{path} is a directory")
        if path.exists() and not force:
            raise click.UsageError(f"{path} exists; pass --force to overwrite it")
