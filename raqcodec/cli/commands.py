"""The ``raqcodec`` command line: a thin layer over the library (``raqcodec.codec``, ``raqcodec.batch.run``,
``raqcodec.train``).

Errors a user can cause (bad input, unreachable budget, missing model) print one line on stderr and exit
non-zero; set RAQCODEC_DEBUG=1 to see tracebacks of unexpected errors. Option values are checked before
anything heavy is imported: ``--help``, ``--version``, ``info``, ``models`` and every usage error answer
without loading torch. Signals are handled from the first line of the entry point
(``raqcodec.__main__``, ``raqcodec.interrupts``).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..io.bitstream import FORMAT_VERSION, READ_VERSIONS, REFINED_VERSION
from ..errors import USER_ERRORS
from ..eval import BASELINES, METRICS, OURS
from ..options import (ADAPTERS, DEFAULT_REFINE_STEPS, DEVICES, ENTROPY_CHOICES, MAX_REFINE_STEPS, is_positive_bpp,
                       size_in_range)
from ..io.formats import DEFAULT_JPEG_QUALITY, READABLE_EXTENSIONS, output_extensions

if TYPE_CHECKING:
    from ..batch.run import Outcome, Plan, Settings

EXIT_FAILED = 1  # at least one input could not be processed
EXIT_USAGE = 2  # a request that cannot be right (click's usage errors too)
EXIT_INTERNAL = 70  # a bug: unexpected exception
EXIT_PIPE = 128 + 13  # stdout was closed by its reader (`| head -1`), as if killed by SIGPIPE


def _say_error(message: str) -> None:
    click.echo(f"raqcodec: error: {message}", err=True)


def _note(message: str) -> None:
    click.echo(f"raqcodec: note: {message}", err=True)


def _stdout_closed() -> None:
    """The reader of stdout went away: stop quietly. stdout now points at /dev/null so that the flush at
    interpreter exit cannot complain either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(EXIT_PIPE)


class _Group(click.Group):
    """Every failure is one line on stderr: click's usage errors (exit 2), user errors (exit 1) and
    unexpected exceptions (exit 70, no traceback unless RAQCODEC_DEBUG is set). A closed stdout is silent."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name or "raqcodec", complete_var, standalone_mode=False, **extra)
            sys.stdout.flush()  # a closed pipe shows here rather than at interpreter exit
        except click.exceptions.NoArgsIsHelpError as exc:  # bare `raqcodec`: the help, as it is written
            click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message(), err=True)
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            hint = " (see --help)" if isinstance(exc, click.UsageError) else ""
            _say_error(exc.format_message().replace("\n", " ") + hint)
            sys.exit(exc.exit_code)
        except click.Abort:
            _say_error("aborted")
            sys.exit(1)
        except BrokenPipeError:
            _stdout_closed()
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except BrokenPipeError:
            _stdout_closed()
        except KeyboardInterrupt:
            _say_error("interrupted")
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            if os.environ.get("RAQCODEC_DEBUG"):
                raise
            _say_error(f"internal error ({type(exc).__name__}: {exc}); rerun with RAQCODEC_DEBUG=1 for details")
            sys.exit(EXIT_INTERNAL)


_VERSION = (f"raqcodec %(version)s (.raq format: writes version {FORMAT_VERSION}, or {REFINED_VERSION} with a "
            f"model that has a residual stage; reads versions {', '.join(map(str, READ_VERSIONS))})")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="raqcodec", message=_VERSION)
def main() -> None:
    """raqcodec: one VQ-VAE model, any bitrate (Rate-Adaptive Quantization + rANS).

    \b
    raqcodec encode --bpp 0.3 photo.png        # -> photo.raq, at most 0.3 bits per pixel
    raqcodec decode photo.raq -o photo-raq.png # -> photo-raq.png (photo.png is the original)
    raqcodec info photo.raq                    # header, size, bpp
    """


# -- option values: checked before anything heavy is imported ---------------------------------------------

def _positive_number(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not is_positive_bpp(value):
        raise click.BadParameter(f"must be a positive number of bits per pixel, got {value}")
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
        raise click.BadParameter(f"{size} is outside model {name}'s codebook sizes {lo}..{hi}",
                                 param_hint="'-k' / '--codebook-size'")


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

_device = click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                       help="Where the networks run; every device decodes to the same pixels.")
_force = click.option("-f", "--force", is_flag=True, help="Overwrite existing outputs.")
_json_per_file = click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file on stdout.")


class _InputPath(click.Path):
    """An existing path, ``-`` (stdin), or a glob pattern (* ? [) the shell left unexpanded: raqcodec.batch.run
    expands it."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from ..batch.run import GLOB_MAGIC

        if isinstance(value, str) and GLOB_MAGIC.search(value) and not os.path.lexists(value):
            return value
        return super().convert(value, param, ctx)


def _shard(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    from ..batch.run import parse_shard

    if value is None:
        return None
    try:
        return parse_shard(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


_tree_inputs = click.argument("inputs", nargs=-1, required=True, type=_InputPath(exists=True, allow_dash=True))
_batch_force = click.option("-f", "--force", is_flag=True,
                            help="Redo raqcodec's own complete outputs in a batch (skipped otherwise), and "
                                 "replace a file raqcodec did not write when -o FILE names it.")
_jobs = click.option("-j", "--jobs", type=click.IntRange(1, 256), default=1, show_default=True,
                     help="Worker processes (each loads the model once and uses one torch thread).")
_shard_option = click.option("--shard", metavar="I/N", callback=_shard,
                             help="Do only part I of N (1-based) of the inputs, chosen by a hash of each "
                                  "input's path relative to its folder: N machines, one part each.")
_quiet = click.option("-q", "--quiet", is_flag=True,
                      help="No per-file lines, notes, progress bar or summary; errors still print.")
_verbose = click.option("-v", "--verbose", is_flag=True, help="Also print the seconds of each stage per file.")


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
        return record, (f"{src} -> {dst}  {f['width']}x{f['height']}  {f['bytes']} bytes  {f['bpp']:.4f} bpp  "
                        f"K~={f['codebook_size']}  {f['seconds']:.2f} s")
    return record, f"{src} -> {dst}  {f['width']}x{f['height']} {f['mode']}  {f['seconds']:.2f} s"


def _failure_line(outcome: Outcome) -> str:
    src, error = outcome.job.shown_source, outcome.error or "failed"
    return error if src in error else f"{src}: {error}"


def _stage_line(outcome: Outcome) -> str:
    stages = outcome.fields.get("stages") or {}
    timing = ", ".join(f"{name} {seconds:.3f} s" for name, seconds in stages.items())
    return f"raqcodec: {outcome.job.shown_source}: {timing}"


def _progress(quiet: bool) -> Any:
    """A rich progress bar on stderr (files, files/s, elapsed, ETA), or a disabled one."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    from rich.text import Text

    class FilesPerSecond(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.1f} files/s" if speed else "- files/s")

    show = not quiet and sys.stderr.isatty()
    # stdout lines go above the bar only when stdout is the terminal too; redirected, they stay on stdout
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), FilesPerSecond(),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True),
                    disable=not show, redirect_stdout=show and sys.stdout.isatty())


def _plan(settings: Settings, inputs: tuple[str, ...], output: str | None, force: bool) -> Plan:
    """The batch plan, with every request that cannot be right refused as a usage error (exit 2): bad
    paths, several inputs with a file name for -o, an output format nobody writes, and, for one named
    file, an existing output raqcodec did not write."""
    from ..batch import run as batch
    from ..model import tiling

    try:
        tiling.tile_pixels()  # a bad $RAQCODEC_TILE_PIXELS is a usage error, not one failure per file
        plan = batch.plan(inputs, settings.kind, output)
    except (batch.BatchError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    if not plan.is_batch:
        refused = batch.refusal(plan.jobs[0], settings.kind, force, batch=False)
        if refused is not None:
            raise click.UsageError(refused)
    return plan


def _run_batch(settings: Settings, inputs: tuple[str, ...], output: str | None, force: bool, as_json: bool,
               jobs: int, shard: tuple[int, int] | None, quiet: bool, verbose: bool) -> None:
    """Plan, run and report a batch (raqcodec.batch.run); exits 1 when any file failed, 128+signal when
    interrupted."""
    from ..batch import run as batch

    _check_stdout(output, as_json)
    plan = _plan(settings, inputs, output, force)
    if not quiet:
        for message in plan.notes:
            _note(message)
    for message in plan.errors:
        _say_error(message)
    todo = batch.select_shard(plan.jobs, *shard) if shard else plan.jobs
    progress = _progress(quiet)

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
            summary = batch.run(todo, settings, force=force, workers=jobs, resume=plan.is_batch, report=report,
                                note=(lambda message: None) if quiet else _note, start=start)
    except batch.BatchFatal as exc:
        _say_error(str(exc))
        sys.exit(EXIT_FAILED)
    summary.failed += len(plan.errors)
    summarized = plan.is_batch and not quiet
    if summarized:
        shard_text = f" (shard {shard[0]}/{shard[1]} of {len(plan.jobs)})" if shard else ""
        click.echo(f"raqcodec: {batch.summary_line(summary)}{shard_text}", err=True)
    if summary.interrupted:
        if not summarized:  # the summary line already says so: one line either way
            name = signal.Signals(summary.interrupted).name
            _say_error("interrupted" if name == "SIGINT" else f"terminated ({name}); every output written is "
                       "complete, rerun to finish")
        sys.exit(128 + summary.interrupted)
    if summary.failed:
        sys.exit(EXIT_FAILED)


# -- commands ------------------------------------------------------------------------------------------

_OUTPUT_HELP = ("Output {what} (one input file; - for standard output) or directory (several inputs, a "
                "directory or a pattern: an existing directory, or a new name without a {what} extension, or "
                "ending in /): the input trees are mirrored under it. Default: beside each input.")
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


@main.command(help="Encode images to .raq files (photo.png -> photo.raq)." + _BATCH_HELP.format(
    found=f"image files by extension ({' '.join(sorted(READABLE_EXTENSIONS))})", pattern="'photos/**/*.jpg'") + """
    \b
    raqcodec encode --bpp 0.3 photo.png
    raqcodec encode --bpp 0.2 photos/ -o out/ -j 4        # out/a/b.raq for photos/a/b.png
    raqcodec encode -k 256 'photos/**/*.jpg' -o out/ --shard 2/3
    cat a.png | raqcodec encode - -o - --bpp 0.2 > a.raq
""")
@_tree_inputs
@click.option("-o", "--output", type=click.Path(allow_dash=True), help=_OUTPUT_HELP.format(what=".raq"))
@click.option("--bpp", type=float, callback=_positive_number,
              help="Budget for the whole file in bits per pixel; picks the best K~ that fits. A budget above what "
                   "the model can use is noted (and in --json as budget_unused).")
@click.option("--codebook-size", "-k", type=int, help="Encode at this codebook size K~ instead.")
@click.option("--model", default=None, help="Model name or .safetensors path (default: the bundled default).")
@click.option("--adapter", type=click.Choice(ADAPTERS), default="seq2seq", show_default=True,
              help="seq2seq: the trained adapter (data-driven RAQ); cluster: DKM/inverse DKM (model-based).")
@click.option("--refine", type=click.IntRange(0, MAX_REFINE_STEPS), default=None, metavar="STEPS",
              help="Decoder-aware index refinement steps (encoder-side search; 0 = nearest neighbour). "
                   "Under --bpp the encoder tries up to max(STEPS, 8) steps at several codebook sizes "
                   "and keeps what decodes closest within the budget (images up to 2 MP). "
                   f"[default: the codec's default, {DEFAULT_REFINE_STEPS}]")
@click.option("--entropy", type=click.Choice(ENTROPY_CHOICES), default="auto", show_default=True,
              help="Index coder: the model's context model, or one order-0 table per image (format 1's coder); "
                   "auto: context when the model has one.")
@_device
@_jobs
@_shard_option
@_quiet
@_verbose
@_batch_force
@_json_per_file
def encode(inputs: tuple[str, ...], output: str | None, bpp: float | None, codebook_size: int | None,
           model: str | None, adapter: str, refine: int | None, entropy: str, device: str, jobs: int,
           shard: tuple[int, int] | None, quiet: bool, verbose: bool, force: bool, as_json: bool) -> None:
    from ..batch.run import ENCODE, Settings

    _check_quiet_verbose(quiet, verbose)
    if (bpp is None) == (codebook_size is None):
        raise click.UsageError("give exactly one of --bpp and --codebook-size")
    _check_model(model)
    if codebook_size is not None:
        _check_codebook_size(codebook_size, model)
    settings = Settings(kind=ENCODE, model=model, device=device, bpp=bpp, codebook_size=codebook_size,
                        adapter=adapter, refine=refine, entropy=entropy)
    _run_batch(settings, inputs, output, force, as_json, jobs, shard, quiet, verbose)


@main.command(help="Decode .raq files to images (photo.raq -> photo.png)." + _BATCH_HELP.format(
    found=".raq files", pattern="'out/**/*.raq'") + f"""
    -o FILE writes the format its extension names: {output_extensions()} (.webp lossless, .jpg/.jpeg at
    --quality); any other extension is refused. Directories of outputs get PNG files, and so does -o -.

    \b
    raqcodec decode photo.raq -o photo-raq.png            # photo.png beside it is never replaced
    raqcodec decode photo.raq -o photo-raq.webp
    raqcodec decode out/ -o decoded/ -j 4                 # decoded/a/b.png for out/a/b.raq
    raqcodec decode - -o - < a.raq > a.png
""")
@_tree_inputs
@click.option("-o", "--output", type=click.Path(allow_dash=True), help=_OUTPUT_HELP.format(what="image"))
@click.option("--quality", type=click.IntRange(1, 100), default=DEFAULT_JPEG_QUALITY, show_default=True,
              help="JPEG quality when -o names a .jpg or .jpeg file.")
@click.option("--model", default=None, help="Model name or path to try first (found by fingerprint otherwise).")
@_device
@_jobs
@_shard_option
@_quiet
@_verbose
@_batch_force
@_json_per_file
def decode(inputs: tuple[str, ...], output: str | None, quality: int, model: str | None, device: str, jobs: int,
           shard: tuple[int, int] | None, quiet: bool, verbose: bool, force: bool, as_json: bool) -> None:
    from ..batch.run import DECODE, Settings

    _check_quiet_verbose(quiet, verbose)
    if model is not None:
        _check_model(model)
    _run_batch(Settings(kind=DECODE, model=model, device=device, quality=quality), inputs, output, force, as_json,
               jobs, shard, quiet, verbose)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--grid", is_flag=True, help="Also decode the index grid (loads the model and torch: slower) to "
              "report its order-0 entropy beside the payload.")
@click.option("--model", default=None, help="With --grid: model name or path to try first (found by fingerprint "
              "otherwise).")
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
        summary = {"file": str(file), **bitstream.summary(stream.header, len(data)),
                   "payload_bits": 8 * len(stream.indices_section), "order0_entropy_bits": None}
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
@click.option("-o", "--output", required=True, type=click.Path(allow_dash=True),
              help="The trimmed .raq file (- for standard output).")
@click.option("--bpp", type=float, callback=_positive_number,
              help="Keep as many residual sections as fit this many bits per pixel (whole file).")
@click.option("--sections", type=click.IntRange(0, 32), default=None,
              help="Keep exactly this many leading residual sections instead (0: the base stage alone).")
@click.option("-f", "-y", "--force", is_flag=True, help="Replace an existing output raqcodec did not write, or the input.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object on stdout.")
def trim(source: str, output: str, bpp: float | None, sections: int | None, force: bool, as_json: bool) -> None:
    """Cut a format 3 .raq file to a smaller size without decoding it.

    A model v2 stream stores its residual (the detail the base image misses) in sections, strongest
    detail first; trimming drops sections from the end and rewrites the header, in milliseconds and
    without the model. The result decodes to exactly what an encoder would have written with only
    those sections. SOURCE may be - (standard input).
    """
    from ..io import bitstream
    from ..batch.run import existing_output, ENCODE
    from ..io.atomic import atomic_path
    from ..trim import TrimError, trim as cut

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
    except (TrimError, *USER_ERRORS) as exc:
        _say_error(f"{source}: {exc}")
        sys.exit(EXIT_FAILED)
    header = bitstream.read_header(result)
    if output == "-":
        sys.stdout.buffer.write(result)
        sys.stdout.buffer.flush()
    else:
        with atomic_path(Path(output)) as tmp:
            tmp.write_bytes(result)
    record = {"input": source, "output": output, "bytes_in": len(data), "bytes": len(result),
              "bpp": len(result) * 8 / (header.width * header.height),
              "sections": len(bitstream.unpack(result).refinement_sections)}
    if as_json:
        click.echo(json.dumps(record))
    else:
        click.echo(f"{source} -> {output}  {len(data)} -> {len(result)} bytes  {record['bpp']:.4f} bpp  "
                   f"{record['sections']} residual sections", err=output == "-")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per model on stdout.")
def models(as_json: bool) -> None:
    """List installed models: names, codebook-size range and reachable bitrates."""
    from ..model import registry

    entries = registry.available_models()
    rows = []
    for e in entries:
        card = e.card
        rows.append({"name": e.name, "default": e.name == registry.DEFAULT_MODEL, "path": str(e.path),
                     "k_range": card.get("k_range"),  # trained range; coding goes down to MIN_CODEBOOK_SIZE
                     "coding_range": [min(registry.MIN_CODEBOOK_SIZE, card["k_range"][0]), card["k_range"][1]]
                     if card.get("k_range") else None,
                     "bpp_range_kodak": card.get("bpp_range_kodak"),
                     "fingerprint": card.get("fingerprint"), "description": card.get("description", "")})
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
        table.add_row(r["name"] + (" (default)" if r["default"] else ""), f"{c[0]}..{c[1]} ({k[0]}..{k[1]})",
                      f"{b[0]:.3f}..{b[1]:.3f}" if b else "?", str(r["fingerprint"] or "?")[:16], r["description"])
    Console().print(table)


def _compared(path: Path, model: str | None) -> Any:
    """An image file, or a .raq file decoded, as ``io.images.SourceImage`` (8-bit RGB plus alpha)."""
    from ..io import images
    from ..io.bitstream import MAGIC

    with open(path, "rb") as fh:
        is_stream = fh.read(len(MAGIC)) == MAGIC
    if not is_stream:
        return images.load_image(path)
    from .. import codec

    return images.load_image(codec.decode(path, model=model), name=str(path))


@main.command()
@click.argument("reference", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("distorted", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", default=None, help="For a .raq file: model name or path to try first.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object on stdout.")
def compare(reference: Path, distorted: Path, model: str | None, as_json: bool) -> None:
    """Compare DISTORTED with REFERENCE on every channel: RGB PSNR (8-bit), MS-SSIM (both sides at least
    161 pixels), and the alpha channel's PSNR separately (a missing alpha is opaque). Either file may be a
    .raq file: it is decoded first."""
    import numpy as np

    from ..eval import metrics

    try:
        a, b = _compared(reference, model), _compared(distorted, model)
    except USER_ERRORS as exc:
        _say_error(str(exc))
        sys.exit(EXIT_FAILED)
    if a.rgb.shape != b.rgb.shape:
        _say_error(f"sizes differ: {a.width}x{a.height} and {b.width}x{b.height}")
        sys.exit(EXIT_FAILED)
    rgb = metrics.psnr(metrics.mse(a.rgb, b.rgb))
    has_alpha = a.alpha is not None or b.alpha is not None
    opaque = np.full(a.rgb.shape[:2], 255, np.uint8)
    alpha = metrics.psnr(metrics.mse(opaque if a.alpha is None else a.alpha, opaque if b.alpha is None else b.alpha))
    ms_ssim = None
    if min(a.width, a.height) >= metrics.ms_ssim_min_side():
        ms_ssim = float(metrics.ms_ssim(a.rgb.transpose(2, 0, 1)[None], b.rgb.transpose(2, 0, 1)[None])[0])
    record = {"reference": str(reference), "distorted": str(distorted),
              "psnr": None if rgb == math.inf else round(rgb, 4),  # RGB; JSON has no inf: null when identical
              "alpha_psnr": None if alpha == math.inf else round(alpha, 4), "has_alpha": has_alpha,
              "ms_ssim": None if ms_ssim is None else round(ms_ssim, 6),
              "ms_ssim_db": None if ms_ssim is None or ms_ssim >= 1 else round(metrics.ms_ssim_db(ms_ssim), 4),
              "rgb_identical": rgb == math.inf, "alpha_identical": alpha == math.inf,
              "identical": rgb == math.inf and alpha == math.inf}
    if as_json:
        click.echo(json.dumps(record))
        return
    if record["identical"]:
        click.echo("identical pixels (RGB" + (" and alpha)" if has_alpha else ")"))
        return
    parts = ["RGB identical" if rgb == math.inf else f"RGB PSNR {rgb:.2f} dB"]
    if ms_ssim is not None:
        parts.append(f"MS-SSIM {ms_ssim:.4f}" + (f" ({record['ms_ssim_db']:.2f} dB)" if record["ms_ssim_db"] else ""))
    else:
        parts.append(f"MS-SSIM n/a (a side under {metrics.ms_ssim_min_side()} pixels)")
    if has_alpha:
        parts.append("alpha identical" if alpha == math.inf else f"alpha PSNR {alpha:.2f} dB")
    else:
        parts.append("no alpha")
    click.echo(", ".join(parts))


@main.command()
@click.option("--recipe", default="kodak-default", show_default=True, help="Built-in recipe name or a .toml file.")
@click.option("--data", "data", multiple=True, required=True, type=click.Path(exists=True, path_type=Path),
              help="Image folder/file or CIFAR-10 tarball (repeatable); read in place.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Run directory (checkpoints, log.jsonl); an existing run resumes.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value, e.g. train.steps=5000 or model.channels=96.")
@click.option("--max-minutes", type=float, default=None, help="Stop (with a checkpoint) after this long; rerun to resume.")
@click.option("--threads", type=int, default=None, help="CPU threads for torch (per process).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where to train; under torchrun each process takes the GPU of its LOCAL_RANK.")
def train(recipe: str, data: tuple[Path, ...], out_dir: Path, overrides: tuple[str, ...], max_minutes: float | None,
          threads: int | None, device: str) -> None:
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
    result = run_training(rec, source, out_dir, validation=validation, max_minutes=max_minutes,
                          show_progress=sys.stderr.isatty(), device=where)
    click.echo(f"stopped at step {result.step}; checkpoint {result.checkpoint}")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--name", required=True, help="Model name (file stem).")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("models"),
              show_default=True, help="Where to write NAME.safetensors and NAME.json.")
@click.option("--data", "data", multiple=True, required=True, type=click.Path(exists=True, path_type=Path),
              help="Training data (as given to train): calibrates the exact decoder and is named in the card.")
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
@click.option("--data", "data", multiple=True, required=True, type=click.Path(exists=True, path_type=Path),
              help="Image folders/files (repeatable); read in place.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Run directory (grids, checkpoint, log.jsonl); an existing run resumes.")
@click.option("--steps", type=click.IntRange(1), default=12000, show_default=True)
@click.option("--batch", type=click.IntRange(1), default=1024, show_default=True, help="Positions per step.")
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--write-model", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="When done, write a copy of the model file with this context model to this path "
                   "(and its card beside it).")
@click.option("--threads", type=int, default=None, help="CPU threads for torch.")
@_force
def train_context(model: str | None, data: tuple[Path, ...], out_dir: Path, steps: int, batch: int, lr: float,
                  seed: int, write_model: Path | None, threads: int | None, force: bool) -> None:
    """Train (or resume) the context model that entropy-codes a model's index grids.

    The codec model itself is unchanged (same fingerprint); see docs/DESIGN.md, "Context model".
    """
    import torch

    from ..model import registry
    from ..train.context import ContextTrainConfig, install_context, prepare_grids, train_context as fit

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
        summary = {"steps": steps, "data": [str(p) for p in data], "train_grids": len(train_grids),
                   "last_validation": json.loads(last)}
        crc = install_context(codec_model.path, net, write_model, summary)
        click.echo(f"wrote {write_model} (context checksum {crc:08x})")


# -- rate-distortion -----------------------------------------------------------------------------------

def _number_list(value: str | None, kind: type, option: str) -> list[Any] | None:
    """A comma-separated list of positive numbers (floats or ints), or None when not given."""
    if value is None:
        return None
    try:
        numbers = [kind(item) for item in value.split(",") if item.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated {'integers' if kind is int else 'numbers'}, "
                                 f"got {value!r}", param_hint=option) from None
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


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--bpp", "bpp_list", metavar="LIST",
              help="raqcodec --bpp targets, comma-separated [default: 0.1,0.15,0.2,0.3,0.4,0.5]; with --no-raq, "
                   "the mean bpp the baselines' qualities aim at.")
@click.option("--codebook-sizes", "size_list", metavar="LIST", help="Measure raqcodec at these codebook sizes K~ "
              "instead of --bpp targets.")
@click.option("--baselines", "baseline_list", default="jpeg", show_default=True, metavar="LIST",
              help="Reference codecs, comma-separated: jpeg, webp, avif (Pillow), or none.")
@click.option("--no-raq", is_flag=True, help="Measure the baselines only (raqcodec is the slow one).")
@click.option("--metrics", "metric_list", default="psnr,ms-ssim", show_default=True, metavar="LIST",
              help="psnr, ms-ssim (MS-SSIM needs both sides >= 161 pixels; null otherwise).")
@click.option("--anchor", type=click.Choice([OURS, *BASELINES]), default=None,
              help="Codec the BD-rates are measured against.  [default: jpeg when measured]")
@click.option("--model", default=None, help="Model name or .safetensors path (default: the bundled default).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the results as JSON.")
@click.option("--per-image", type=click.Path(dir_okay=False, path_type=Path),
              help="Write one CSV row per codec x point x image.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Draw the PSNR curves (.png, .svg or .pdf).")
@click.option("-j", "--jobs", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Worker processes (each loads the model once and uses one torch thread).")
@_device
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@_force
def rd(inputs: tuple[Path, ...], bpp_list: str | None, size_list: str | None, baseline_list: str, no_raq: bool,
       metric_list: str, anchor: str | None, model: str | None, output: Path | None, per_image: Path | None,
       plot_path: Path | None, jobs: int, device: str, quiet: bool, force: bool) -> None:
    """Rate-distortion curves: raqcodec and reference codecs on images or folders (searched recursively).

    Every point is one setting applied to every image; its values are means over the images of bpp (real
    file sizes), RGB PSNR, MS-SSIM (also in dB) and encode/decode seconds. Baseline qualities are searched
    so that their points span raqcodec's bpp range. BD-rates (PCHIP) are against --anchor. Exits 1 if
    any image or point failed (the results are still written, failures listed in them).

    \b
    raqcodec rd kodak/ --baselines jpeg,webp,avif -o rd.json --plot rd.png
    raqcodec rd kodak/ --no-raq --baselines jpeg,webp --bpp 0.1,0.2,0.3,0.5,0.75,1.0
    """
    from ..eval import plot as rdplot
    from ..eval import rd as engine
    from ..eval.baselines import BaselineUnavailable

    bpp = _number_list(bpp_list, float, "--bpp")
    sizes = _number_list(size_list, int, "--codebook-sizes")
    if bpp is not None and sizes is not None:
        raise click.UsageError("give at most one of --bpp and --codebook-sizes")
    if no_raq and sizes is not None:
        raise click.UsageError("--codebook-sizes measures raqcodec; it cannot go with --no-raq")
    metrics = _name_list(metric_list, METRICS, "--metrics")
    if not metrics:
        raise click.BadParameter("give at least one metric", param_hint="--metrics")
    if plot_path is not None:
        try:
            rdplot.check_output(plot_path)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--plot") from None
    _check_new_files([output, per_image, plot_path], force)
    config = engine.RDConfig(inputs=list(inputs), bpp=bpp, codebook_sizes=sizes, raq=not no_raq,
                             baselines=_name_list(baseline_list, BASELINES, "--baselines"),
                             metrics=tuple(m for m in METRICS if m in metrics), anchor=anchor,
                             model=model, device=device, jobs=jobs)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    show = not quiet and sys.stderr.isatty()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=Console(stderr=True), disable=not show, transient=False)
    try:
        with progress:
            results = engine.run(config, progress)
    except (engine.RDError, BaselineUnavailable) as exc:
        raise click.ClickException(str(exc)) from None
    except USER_ERRORS as exc:
        _say_error(str(exc))
        sys.exit(EXIT_FAILED)
    params = click.get_current_context().params  # as parsed: sys.argv is not ours when called as a library
    results = {"options": {k: [str(v) for v in value] if isinstance(value, tuple) else
                           str(value) if isinstance(value, Path) else value for k, value in params.items()},
               **results}
    for failure in results["failures"]:
        where = " ".join(str(x) for x in (failure["codec"], _setting_text(failure["setting"])) if x)
        _say_error(f"{failure['image']}{': ' + where if where else ''}: {failure['message']}")
    for note in results["notes"]:
        _note(note)
    console = Console()
    for table in engine.summary_tables(results):
        console.print(table)
    failed = bool(results["failures"])
    if output is not None:
        engine.write_json(results, output)
        click.echo(f"wrote {output}", err=True)
    if per_image is not None:
        engine.write_csv(results, per_image)
        click.echo(f"wrote {per_image}", err=True)
    if plot_path is not None:
        stem = output.stem if output is not None else "rd"
        try:
            rdplot.plot([(stem, results)], plot_path, "psnr" if "psnr" in metrics else "ms-ssim")
            click.echo(f"wrote {plot_path}", err=True)
        except ValueError as exc:
            _say_error(str(exc))
            failed = True
    if failed:
        sys.exit(EXIT_FAILED)


def _setting_text(setting: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in setting.items()) if setting else ""


@main.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The figure: .png, .svg or .pdf.")
@click.option("--metric", type=click.Choice(METRICS), default="psnr", show_default=True)
@_force
def plot(results: tuple[Path, ...], output: Path, metric: str, force: bool) -> None:
    """Plot rate-distortion curves from `raqcodec rd -o` results files: one curve per codec and file."""
    from ..eval import plot as rdplot

    try:
        rdplot.check_output(output)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="-o") from None
    _check_new_files([output], force)
    try:
        loaded = [(path.stem, rdplot.load_results(path)) for path in results]
        curves = rdplot.plot(loaded, output, metric)
    except (ValueError, OSError) as exc:
        _say_error(str(exc))
        sys.exit(EXIT_FAILED)
    click.echo(f"wrote {output} ({curves} curves)")
