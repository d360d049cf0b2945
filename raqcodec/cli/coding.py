"""The coding commands: encode and decode (files, trees, patterns: ``raqcodec.batch``), info, trim, models."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import USER_ERRORS
from ..io.formats import DEFAULT_JPEG_QUALITY, READABLE_EXTENSIONS, output_extensions
from ..options import (
    ADAPTERS,
    DEFAULT_REFINE_STEPS,
    ENTROPY_CHOICES,
    MAX_REFINE_STEPS,
)
from .app import EXIT_FAILED, _note, _say_error, main
from .options import (
    _batch_force,
    _check_codebook_size,
    _check_model,
    _check_quiet_verbose,
    _check_stdout,
    _device,
    _jobs,
    _json_per_file,
    _positive_number,
    _quiet,
    _shard_option,
    _tree_inputs,
    _verbose,
)

if TYPE_CHECKING:
    from ..batch.jobs import Outcome, Plan, Settings


def _outcome_record(outcome: Outcome) -> tuple[dict[str, Any], str | None]:
    """The --json record and the text line (None: a failure, reported on stderr only) of one file."""
    src, dst = outcome.job.shown_source, outcome.job.shown_output
    record: dict[str, Any] = {"input": src, "output": dst, "status": outcome.status}
    if outcome.status == "skipped":
        record["reason"] = outcome.reason
        return record, f"{src} -> {dst}  skipped ({outcome.reason})"
    if outcome.status == "failed":
        record["error"] = outcome.error
        return record, None
    f = outcome.fields
    record.update(f)
    if "bpp" in f:
        return record, (
            f"{src} -> {dst}  {f['width']}x{f['height']}  {f['bytes']} bytes  {f['bpp']:.4f} bpp  "
            f"K~={f['codebook_size']}  {f['seconds']:.2f} s"
        )
    return record, f"{src} -> {dst}  {f['width']}x{f['height']} {f['mode']}  {f['seconds']:.2f} s"


def _failure_line(outcome: Outcome) -> str:
    src, error = outcome.job.shown_source, outcome.error or "failed"
    return error if src in error else f"{src}: {error}"


def _stage_line(outcome: Outcome) -> str:
    stages = outcome.fields.get("stages") or {}
    timing = ", ".join(f"{name} {seconds:.3f} s" for name, seconds in stages.items())
    return f"raqcodec: {outcome.job.shown_source}: {timing}"


def _plan(settings: Settings, inputs: tuple[str, ...], output: str | None, force: bool) -> Plan:
    """The batch plan, with every request that cannot be right refused as a usage error (exit 2): bad
    paths, several inputs with a file name for -o, an output format nobody writes, and, for one named
    file, an existing output raqcodec did not write."""
    from ..batch.outputs import refusal
    from ..batch.plan import plan as make_plan
    from ..errors import BatchError
    from ..model import tiling

    try:
        tiling.tile_pixels()  # a bad $RAQCODEC_TILE_PIXELS is a usage error, not one failure per file
        plan = make_plan(inputs, settings.kind, output)
    except (BatchError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    if not plan.is_batch:
        refused = refusal(plan.jobs[0], settings.kind, force, batch=False)
        if refused is not None:
            raise click.UsageError(refused)
    return plan


def _run_batch(
    settings: Settings,
    inputs: tuple[str, ...],
    output: str | None,
    force: bool,
    as_json: bool,
    jobs: int,
    shard: tuple[int, int] | None,
    quiet: bool,
    verbose: bool,
) -> None:
    """Plan, run and report a batch (``raqcodec.batch``); exits 1 when any file failed, 128+signal when
    interrupted."""
    from ..batch.plan import select_shard
    from ..batch.run import run, summary_line
    from ..errors import BatchFatal
    from ..progress import progress_bar

    _check_stdout(output, as_json)
    plan = _plan(settings, inputs, output, force)
    if not quiet:
        for message in plan.notes:
            _note(message)
    for message in plan.errors:
        _say_error(message)
    todo = select_shard(plan.jobs, *shard) if shard else plan.jobs
    progress = progress_bar(not quiet and sys.stderr.isatty(), rate="files", eta=True)

    def start(total: int) -> None:
        if total:
            progress.add_task(settings.kind, total=total)

    def report(outcome: Outcome) -> None:
        record, line = _outcome_record(outcome)
        if not quiet:
            for message in outcome.notes:
                _note(f"{outcome.job.shown_source}: {message}")
        if outcome.status == "failed":
            _say_error(_failure_line(outcome))
        if verbose and outcome.status == "done":
            click.echo(_stage_line(outcome), err=True)
        if as_json:
            click.echo(json.dumps(record))
        elif line is not None and not quiet:
            click.echo(line, err=outcome.job.stdout)  # stdout carries the data itself there
        if outcome.status != "skipped" and progress.tasks:
            progress.advance(progress.tasks[0].id)

    try:
        with progress:
            summary = run(
                todo,
                settings,
                force=force,
                workers=jobs,
                resume=plan.is_batch,
                report=report,
                note=(lambda message: None) if quiet else _note,
                start=start,
            )
    except BatchFatal as exc:
        _say_error(str(exc))
        sys.exit(EXIT_FAILED)
    summary.failed += len(plan.errors)
    summarized = plan.is_batch and not quiet
    if summarized:
        shard_text = f" (shard {shard[0]}/{shard[1]} of {len(plan.jobs)})" if shard else ""
        click.echo(f"raqcodec: {summary_line(summary)}{shard_text}", err=True)
    if summary.interrupted:
        if not summarized:  # the summary line already says so: one line either way
            name = signal.Signals(summary.interrupted).name
            _say_error(
                "interrupted"
                if name == "SIGINT"
                else f"terminated ({name}); every output written is complete, rerun to finish"
            )
        sys.exit(128 + summary.interrupted)
    if summary.failed:
        sys.exit(EXIT_FAILED)


# -- commands ------------------------------------------------------------------------------------------

_OUTPUT_HELP = (
    "Output {what} (one input file; - for standard output) or directory (several inputs, a "
    "directory or a pattern: an existing directory, or a new name without a {what} extension, or "
    "ending in /): the input trees are mirrored under it. Default: beside each input."
)
_BATCH_HELP = """

    INPUTS are files, - (standard input, with -o FILE or -o -), directories (searched recursively for
    {found}; hidden files skipped, other files counted in a note) and glob patterns (quoted, e.g.
    {pattern}). Exits 1 if any file failed (each is listed), 2 for a request that cannot be right, 0
    otherwise. Images over $RAQCODEC_TILE_PIXELS (default 2 MP) are processed in tiles, in bounded memory
    (decoded pixels are the same bit for bit).

    Existing outputs: raqcodec redoes a file it wrote itself (a .raq; an image that carries its
    'Software: raqcodec' mark), as cwebp and ffmpeg -y would; a batch (several inputs, a directory or a
    pattern) skips its complete outputs instead, so that a rerun resumes (--force redoes them). Any other
    file is left alone: one named with -o FILE is replaced only with --force, one at a derived name
    (photo.png beside photo.raq: maybe the original) never. Nothing partial is ever left under an
    output's name, even when interrupted.
"""


@main.command(
    help="Encode images to .raq files (photo.png -> photo.raq)."
    + _BATCH_HELP.format(
        found=f"image files by extension ({' '.join(sorted(READABLE_EXTENSIONS))})", pattern="'photos/**/*.jpg'"
    )
    + """
    \b
    raqcodec encode --bpp 0.3 photo.png
    raqcodec encode --bpp 0.2 photos/ -o out/ -j 4        # out/a/b.raq for photos/a/b.png
    raqcodec encode -k 256 'photos/**/*.jpg' -o out/ --shard 2/3
    cat a.png | raqcodec encode - -o - --bpp 0.2 > a.raq
"""
)
@_tree_inputs
@click.option("-o", "--output", type=click.Path(allow_dash=True), help=_OUTPUT_HELP.format(what=".raq"))
@click.option(
    "--bpp",
    type=float,
    callback=_positive_number,
    help="Budget for the whole file in bits per pixel; picks the best K~ that fits. A budget above what "
    "the model can use is noted (and in --json as budget_unused).",
)
@click.option("--codebook-size", "-k", type=int, help="Encode at this codebook size K~ instead.")
@click.option("--model", default=None, help="Model name or .safetensors path (default: the bundled default).")
@click.option(
    "--adapter",
    type=click.Choice(ADAPTERS),
    default="seq2seq",
    show_default=True,
    help="seq2seq: the trained adapter (data-driven RAQ); cluster: DKM/inverse DKM (model-based).",
)
@click.option(
    "--refine",
    type=click.IntRange(0, MAX_REFINE_STEPS),
    default=None,
    metavar="STEPS",
    help="Decoder-aware index refinement steps (encoder-side search; 0 = nearest neighbour). "
    "Under --bpp the encoder tries up to max(STEPS, 8) steps at several codebook sizes "
    "and keeps what decodes closest within the budget (images up to 2 MP). "
    f"[default: the codec's default, {DEFAULT_REFINE_STEPS}]",
)
@click.option(
    "--entropy",
    type=click.Choice(ENTROPY_CHOICES),
    default="auto",
    show_default=True,
    help="Index coder: the model's context model, or one order-0 table per image (format 1's coder); "
    "auto: context when the model has one.",
)
@_device
@_jobs
@_shard_option
@_quiet
@_verbose
@_batch_force
@_json_per_file
def encode(
    inputs: tuple[str, ...],
    output: str | None,
    bpp: float | None,
    codebook_size: int | None,
    model: str | None,
    adapter: str,
    refine: int | None,
    entropy: str,
    device: str,
    jobs: int,
    shard: tuple[int, int] | None,
    quiet: bool,
    verbose: bool,
    force: bool,
    as_json: bool,
) -> None:
    from ..batch.jobs import ENCODE, Settings

    _check_quiet_verbose(quiet, verbose)
    if (bpp is None) == (codebook_size is None):
        raise click.UsageError("give exactly one of --bpp and --codebook-size")
    _check_model(model)
    if codebook_size is not None:
        _check_codebook_size(codebook_size, model)
    settings = Settings(
        kind=ENCODE,
        model=model,
        device=device,
        bpp=bpp,
        codebook_size=codebook_size,
        adapter=adapter,
        refine=refine,
        entropy=entropy,
    )
    _run_batch(settings, inputs, output, force, as_json, jobs, shard, quiet, verbose)


@main.command(
    help="Decode .raq files to images (photo.raq -> photo.png)."
    + _BATCH_HELP.format(found=".raq files", pattern="'out/**/*.raq'")
    + f"""
    -o FILE writes the format its extension names: {output_extensions()} (.webp lossless, .jpg/.jpeg at
    --quality); any other extension is refused. Directories of outputs get PNG files, and so does -o -.

    \b
    raqcodec decode photo.raq -o photo-raq.png            # photo.png beside it is never replaced
    raqcodec decode photo.raq -o photo-raq.webp
    raqcodec decode out/ -o decoded/ -j 4                 # decoded/a/b.png for out/a/b.raq
    raqcodec decode - -o - < a.raq > a.png
"""
)
@_tree_inputs
@click.option("-o", "--output", type=click.Path(allow_dash=True), help=_OUTPUT_HELP.format(what="image"))
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=DEFAULT_JPEG_QUALITY,
    show_default=True,
    help="JPEG quality when -o names a .jpg or .jpeg file.",
)
@click.option("--model", default=None, help="Model name or path to try first (found by fingerprint otherwise).")
@_device
@_jobs
@_shard_option
@_quiet
@_verbose
@_batch_force
@_json_per_file
def decode(
    inputs: tuple[str, ...],
    output: str | None,
    quality: int,
    model: str | None,
    device: str,
    jobs: int,
    shard: tuple[int, int] | None,
    quiet: bool,
    verbose: bool,
    force: bool,
    as_json: bool,
) -> None:
    from ..batch.jobs import DECODE, Settings

    _check_quiet_verbose(quiet, verbose)
    if model is not None:
        _check_model(model)
    _run_batch(
        Settings(kind=DECODE, model=model, device=device, quality=quality),
        inputs,
        output,
        force,
        as_json,
        jobs,
        shard,
        quiet,
        verbose,
    )


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--grid",
    is_flag=True,
    help="Also decode the index grid (loads the model and torch: slower) to "
    "report its order-0 entropy beside the payload.",
)
@click.option(
    "--model", default=None, help="With --grid: model name or path to try first (found by fingerprint otherwise)."
)
@_json_per_file
def info(files: tuple[Path, ...], grid: bool, model: str | None, as_json: bool) -> None:
    """Show the header of .raq files, their size, bits per pixel and index payload in bits.

    With --grid, also the order-0 empirical entropy of each index grid (the model must be installed).
    Exits 1 if any file could not be read (each is listed).
    """
    from ..io import bitstream

    failed = False
    for number, file in enumerate(files):
        try:
            data = bitstream.read_stream(file)
            stream = bitstream.unpack(data)
        except USER_ERRORS as exc:
            message = str(exc)
            _say_error(message if str(file) in message else f"{file}: {message}")
            failed = True
            continue
        summary = {
            "file": str(file),
            **bitstream.summary(stream.header, len(data)),
            "payload_bits": 8 * len(stream.indices_section),
            "order0_entropy_bits": None,
        }
        if grid:
            from ..codec import inspect

            try:  # the index grid needs the stream's model; the header alone does not
                details = inspect(data, model=model)
                summary.update(model=details["model"], order0_entropy_bits=round(details["order0_entropy_bits"], 1))
            except USER_ERRORS as exc:
                _note(f"{file}: index grid not decoded ({exc})")
        if as_json:
            click.echo(json.dumps(summary))
            continue
        if number:
            click.echo()
        width = max(len(key) for key in summary)
        for key, value in summary.items():
            if value is None and key == "order0_entropy_bits":
                continue  # not asked for (--grid)
            click.echo(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    if failed:
        sys.exit(EXIT_FAILED)


@main.command()
@click.argument("source", type=click.Path(allow_dash=True))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(allow_dash=True),
    help="The trimmed .raq file (- for standard output).",
)
@click.option(
    "--bpp",
    type=float,
    callback=_positive_number,
    help="Keep as many residual sections as fit this many bits per pixel (whole file).",
)
@click.option(
    "--sections",
    type=click.IntRange(0, 32),
    default=None,
    help="Keep exactly this many leading residual sections instead (0: the base stage alone).",
)
@click.option(
    "-f", "-y", "--force", is_flag=True, help="Replace an existing output raqcodec did not write, or the input."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object on stdout.")
def trim(source: str, output: str, bpp: float | None, sections: int | None, force: bool, as_json: bool) -> None:
    """Cut a format 3 .raq file to a smaller size without decoding it.

    A model v2 stream stores its residual (the detail the base image misses) in sections, strongest
    detail first; trimming drops sections from the end and rewrites the header, in milliseconds and
    without the model. The result decodes to exactly what an encoder would have written with only
    those sections. SOURCE may be - (standard input).
    """
    from ..batch.jobs import ENCODE
    from ..batch.outputs import existing_output
    from ..errors import TrimError
    from ..io import bitstream
    from ..io.atomic import atomic_path
    from ..trim import trim as cut

    failures: tuple[type[Exception], ...] = (TrimError, *USER_ERRORS)
    if (bpp is None) == (sections is None):
        raise click.UsageError("give exactly one of --bpp and --sections")
    _check_stdout(output, as_json)
    if output != "-" and not force:
        if source != "-" and os.path.exists(output) and os.path.samefile(source, output):
            raise click.UsageError(f"{output} is the input; pass --force to replace it")
        existing = existing_output(ENCODE, Path(output))
        if existing is not None and not existing.ours:
            raise click.UsageError(f"{output} exists and was not written by raqcodec; pass --force (-f) to replace it")
    try:
        data = sys.stdin.buffer.read() if source == "-" else bitstream.read_stream(Path(source))
        result = cut(data, bpp=bpp, groups=sections)
    except failures as exc:
        _say_error(f"{source}: {exc}")
        sys.exit(EXIT_FAILED)
    header = bitstream.read_header(result)
    if output == "-":
        sys.stdout.buffer.write(result)
        sys.stdout.buffer.flush()
    else:
        with atomic_path(Path(output)) as tmp:
            tmp.write_bytes(result)
    record = {
        "input": source,
        "output": output,
        "bytes_in": len(data),
        "bytes": len(result),
        "bpp": len(result) * 8 / (header.width * header.height),
        "sections": len(bitstream.unpack(result).refinement_sections),
    }
    if as_json:
        click.echo(json.dumps(record))
    else:
        click.echo(
            f"{source} -> {output}  {len(data)} -> {len(result)} bytes  {record['bpp']:.4f} bpp  "
            f"{record['sections']} residual sections",
            err=output == "-",
        )


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per model on stdout.")
def models(as_json: bool) -> None:
    """List installed models: names, codebook-size range and reachable bitrates."""
    from ..model import registry

    entries = registry.available_models()
    rows = []
    for e in entries:
        card = e.card
        rows.append(
            {
                "name": e.name,
                "default": e.name == registry.DEFAULT_MODEL,
                "path": str(e.path),
                "k_range": card.get("k_range"),  # trained range; coding goes down to MIN_CODEBOOK_SIZE
                "coding_range": [min(registry.MIN_CODEBOOK_SIZE, card["k_range"][0]), card["k_range"][1]]
                if card.get("k_range")
                else None,
                "bpp_range_kodak": card.get("bpp_range_kodak"),
                "fingerprint": card.get("fingerprint"),
                "description": card.get("description", ""),
            }
        )
    if as_json:
        for r in rows:
            click.echo(json.dumps(r))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("model", "K~ range (trained)", "reachable bpp (Kodak mean)", "fingerprint", "description")
    for r in rows:
        k, c = r["k_range"] or ["?", "?"], r["coding_range"] or ["?", "?"]
        b = r["bpp_range_kodak"]
        table.add_row(
            r["name"] + (" (default)" if r["default"] else ""),
            f"{c[0]}..{c[1]} ({k[0]}..{k[1]})",
            f"{b[0]:.3f}..{b[1]:.3f}" if b else "?",
            str(r["fingerprint"] or "?")[:16],
            r["description"],
        )
    Console().print(table)
