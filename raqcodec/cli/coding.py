"""The coding commands: encode and decode (files, trees, patterns: ``raqcodec.batch``)."""

from __future__ import annotations

import json
import signal
import sys
from typing import TYPE_CHECKING, Any

import click

from ..io.formats import DEFAULT_JPEG_QUALITY, READABLE_EXTENSIONS, output_extensions
from ..options import (
    ADAPTERS,
    DEFAULT_EFFORT,
    ENTROPY_CHOICES,
    MAX_EFFORT,
    MAX_LAYERS,
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
    _number_list,
    _positive_decibels,
    _positive_number,
    _quiet,
    _shard_option,
    _tree_inputs,
    _verbose,
)

if TYPE_CHECKING:
    from ..batch.jobs import Job, Outcome, Plan, Settings


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


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


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
    from ..progress import FileStages, progress_bar

    _check_stdout(output, as_json)
    plan = _plan(settings, inputs, output, force)
    if not quiet:
        for message in plan.notes:
            _note(message)
    for message in plan.errors:
        _say_error(message)
    todo = select_shard(plan.jobs, *shard) if shard else plan.jobs
    # Live lines on a terminal only, and never with -q or --json: the files bar of a batch, and under it
    # each file whose encode has run for over progress.SHOW_AFTER_S, with its stage (from the workers too).
    live = not quiet and not as_json and _stderr_is_terminal()
    files = FileStages()
    progress = progress_bar(live, rate="files", eta=True, below=files)

    def start(total: int) -> None:
        if total and plan.is_batch:  # one named file has its stage line, not a bar of one
            progress.add_task(settings.kind, total=total)

    def stage(job: Job, name: str) -> None:
        files.stage(job, job.shown_source, name)

    def report(outcome: Outcome) -> None:
        files.finish(outcome.job)  # its line goes before its result line is printed
        record, line = _outcome_record(outcome)
        if not quiet:
            for message in outcome.notes:
                _note(f"{outcome.job.shown_source}: {message}")
        if outcome.status == "failed":
            _say_error(_failure_line(outcome))
        # sys.stdout/sys.stderr as they are now (rich's proxies while the display is live: see cli.app)
        if verbose and outcome.status == "done":
            click.echo(_stage_line(outcome), file=sys.stderr)
        if as_json:
            click.echo(json.dumps(record))
        elif line is not None and not quiet:
            click.echo(line, file=sys.stderr if outcome.job.stdout else sys.stdout)  # stdout: the data there
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
                stage=stage if live else None,
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
    "--psnr",
    type=float,
    callback=_positive_decibels,
    metavar="DB",
    help="Quality target instead of a budget: the smallest file found whose decoded RGB PSNR reaches DB "
    "(several encodes; a target the model cannot reach is an error naming what it reached).",
)
@click.option(
    "--layers",
    "layer_list",
    metavar="BPP,...",
    help="With --bpp: up to 3 smaller budgets the file can later be cut to with `raqcodec trim` at about the "
    "quality of encoding at them directly (model v2; the full file pays a little for it).",
)
@click.option(
    "--effort",
    type=click.IntRange(0, MAX_EFFORT),
    default=None,
    metavar="N",
    help=f"Encoder effort 0..{MAX_EFFORT}, time against quality under --bpp/--psnr: 0 nearest-neighbour indices "
    "at the largest codebook that fits; 1 also a rate-constrained grid of a 4x larger codebook; 2 also "
    "2 refinement steps and rate-constrained grids at 2x/4x (and the residual stage of model v2); "
    f"3 refinement paths of 8 steps over several sizes and more rate-constrained sizes (the closest, "
    f"about 3x slower). [default: {DEFAULT_EFFORT}]",
)
@click.option(
    "--refine",
    type=click.IntRange(0, MAX_REFINE_STEPS),
    default=None,
    metavar="STEPS",
    help="Expert override of the effort's decoder-aware index refinement (encoder-side search; 0 = nearest "
    "neighbour): the longest refinement path searched under --bpp, the steps taken at -k. "
    "[default: the effort's]",
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
    psnr: float | None,
    layer_list: str | None,
    effort: int | None,
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
    if sum(x is not None for x in (bpp, codebook_size, psnr)) != 1:
        raise click.UsageError("give exactly one of --bpp, --codebook-size and --psnr")
    layers = tuple(_number_list(layer_list, float, "--layers") or ())
    if layers:
        if bpp is None:
            raise click.UsageError("--layers goes with --bpp (budgets below it that the file can be cut to)")
        if list(layers) != sorted(set(layers)) or layers[-1] >= bpp or len(layers) > MAX_LAYERS - 1:
            raise click.UsageError(f"--layers takes up to {MAX_LAYERS - 1} ascending budgets below --bpp {bpp:g}")
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
        effort=effort,
        psnr=psnr,
        layers=layers,
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
