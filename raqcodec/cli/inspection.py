"""The stream and model tools: ``info`` (headers, sizes, bpp), ``trim`` (cut a format 3 file without
decoding it) and ``models`` (what is installed)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ..errors import USER_ERRORS
from .app import EXIT_FAILED, _note, _say_error, main
from .options import (
    _check_stdout,
    _json_per_file,
    _positive_number,
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
    those sections. A file encoded with `--layers B1,B2` cut to one of those budgets is the file that
    budget was coded for (its quality close to an encode at that budget); cut elsewhere it keeps the
    leading detail of the next layer. SOURCE may be - (standard input).

    \b
    raqcodec encode photo.png --bpp 1.0 --layers 0.3 -o photo.raq
    raqcodec trim photo.raq --bpp 0.3 -o photo-small.raq
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
        "layers": len(header.layers),
    }
    if as_json:
        click.echo(json.dumps(record))
    else:
        click.echo(
            f"{source} -> {output}  {len(data)} -> {len(result)} bytes  {record['bpp']:.4f} bpp  "
            f"{record['sections']} residual sections in {record['layers']} layers",
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
            "?" if not b else f"{b[0]:.3f}.." + ("(no limit)" if b[1] is None else f"{b[1]:.3f}"),
            str(r["fingerprint"] or "?")[:16],
            r["description"],
        )
    Console().print(table)
