"""The ``raqcodec`` command line: a thin layer over the library (``raqcodec.codec``, ``raqcodec.train``).

Errors a user can cause (bad input, unreachable budget, missing model) print one line on stderr and exit
non-zero; set RAQCODEC_DEBUG=1 to see tracebacks of unexpected errors.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import click

EXIT_FAILED = 1  # at least one input could not be processed
EXIT_INTERNAL = 70  # a bug: unexpected exception


def _say_error(message: str) -> None:
    click.echo(f"raqcodec: error: {message}", err=True)


def _note(message: str) -> None:
    click.echo(f"raqcodec: note: {message}", err=True)


def _user_errors() -> tuple[type[BaseException], ...]:
    from . import BudgetError, CodecError, EntropyError, FormatError, ImageError, ModelFileError

    return (BudgetError, CodecError, EntropyError, FormatError, ImageError, ModelFileError, OSError)


class _Group(click.Group):
    """Every failure is one line on stderr: click's usage errors (exit 2), user errors (exit 1) and
    unexpected exceptions (exit 70, no traceback unless RAQCODEC_DEBUG is set)."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            hint = " (see --help)" if isinstance(exc, click.UsageError) else ""
            _say_error(exc.format_message().replace("\n", " ") + hint)
            sys.exit(exc.exit_code)
        except click.Abort:
            _say_error("aborted")
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            _say_error("interrupted")
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            if os.environ.get("RAQCODEC_DEBUG"):
                raise
            _say_error(f"internal error ({type(exc).__name__}: {exc}); rerun with RAQCODEC_DEBUG=1 for details")
            sys.exit(EXIT_INTERNAL)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="raqcodec")
def main() -> None:
    """raqcodec: one VQ-VAE model, any bitrate (Rate-Adaptive Quantization + rANS).

    \b
    raqcodec encode --bpp 0.3 photo.png        # -> photo.raq, at most 0.3 bits per pixel
    raqcodec decode photo.raq                  # -> photo.png
    raqcodec info photo.raq                    # header, size, bpp
    """


# -- helpers -------------------------------------------------------------------------------------------

def _output_for(source: Path, out: str | None, many: bool, suffix: str) -> Path:
    """Default: beside the input with the new suffix. -o: a file for one input; a directory for several,
    for an existing directory, or for a path ending in a separator."""
    if out is None:
        return source.with_suffix(suffix)
    target = Path(out)
    if many or target.is_dir() or out.endswith(("/", os.sep)):
        return target / source.with_suffix(suffix).name
    return target


def _check_outputs(pairs: list[tuple[Path, Path]], force: bool) -> None:
    seen: dict[Path, Path] = {}
    for src, dst in pairs:
        key = dst.resolve()
        if key in seen:
            raise click.UsageError(f"{seen[key]} and {src} would both be written to {dst}")
        seen[key] = src
        if key == src.resolve():
            raise click.UsageError(f"output {dst} is the input itself")
        if dst.exists() and not force:
            raise click.UsageError(f"{dst} exists; pass --force to overwrite it")


def _write_atomic(path: Path, data: bytes) -> None:
    from .fileio import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


MAX_STREAM_BYTES = 1 << 30  # no .raq file of a decodable image comes near this


def _read_stream(path: Path) -> bytes:
    """A .raq file's bytes, refusing non-files and absurd sizes before reading them."""
    if not path.is_file():
        raise OSError(f"{path} is not a regular file")
    if path.stat().st_size > MAX_STREAM_BYTES:
        raise OSError(f"{path} is {path.stat().st_size} bytes, larger than any .raq file; refusing to read it")
    return path.read_bytes()


def _emit(as_json: bool, record: dict[str, Any], line: str) -> None:
    click.echo(json.dumps(record) if as_json else line)


@contextmanager
def _per_file(failures: list[str], path: Path) -> Iterator[None]:
    """Report a user-caused failure for one input and carry on with the next."""
    try:
        yield
    except _user_errors() as exc:
        message = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
        _say_error(message)
        failures.append(message)


def _files(inputs: tuple[Path, ...]) -> list[Path]:
    for p in inputs:
        if p.is_dir():
            raise click.UsageError(f"{p} is a directory; pass the image files themselves")
    return list(inputs)


_device = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                       help="Where the networks run; every device decodes to the same pixels.")
_force = click.option("--force", is_flag=True, help="Overwrite existing outputs.")
_json = click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file on stdout.")
_inputs = click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))


# -- commands ------------------------------------------------------------------------------------------

@main.command()
@_inputs
@click.option("-o", "--output", type=click.Path(), help="Output file (one input) or directory (several, or ending in /).")
@click.option("--bpp", type=float, help="Budget for the whole file in bits per pixel; picks the best K~ that fits.")
@click.option("--codebook-size", "-k", type=int, help="Encode at this codebook size K~ instead.")
@click.option("--model", default=None, help="Model name or .safetensors path (default: the bundled default).")
@click.option("--adapter", type=click.Choice(["seq2seq", "cluster"]), default="seq2seq", show_default=True,
              help="seq2seq: the trained adapter (data-driven RAQ); cluster: DKM/inverse DKM (model-based).")
@click.option("--refine", type=click.IntRange(0, 50), default=None, metavar="STEPS",
              help="Decoder-aware index refinement steps (encoder-side search; 0 = nearest neighbour). "
                   "[default: the codec's default]")
@click.option("--entropy", type=click.Choice(["auto", "context", "order0"]), default="auto", show_default=True,
              help="Index coder: the model's context model, or one order-0 table per image (format 1's coder); "
                   "auto: context when the model has one.")
@_device
@_force
@_json
def encode(inputs: tuple[Path, ...], output: str | None, bpp: float | None, codebook_size: int | None,
           model: str | None, adapter: str, refine: int | None, entropy: str, device: str, force: bool,
           as_json: bool) -> None:
    """Encode images to .raq files (photo.png -> photo.raq)."""
    from . import codec, registry

    if (bpp is None) == (codebook_size is None):
        raise click.UsageError("give exactly one of --bpp and --codebook-size")
    files = _files(inputs)
    pairs = [(f, _output_for(f, output, len(files) > 1, ".raq")) for f in files]
    _check_outputs(pairs, force)
    failures: list[str] = []
    try:
        loaded = registry.load(model)
    except _user_errors() as exc:
        _say_error(str(exc))
        sys.exit(EXIT_FAILED)
    for src, dst in pairs:
        with _per_file(failures, src):
            result = codec.encode_detailed(src, bpp=bpp, codebook_size=codebook_size, model=loaded,
                                           adapter=adapter, device=device, entropy=entropy,
                                           refine=codec.DEFAULT_REFINE_STEPS if refine is None else refine)
            for note in result.notes:
                _note(f"{src}: {note}")
            _write_atomic(dst, result.data)
            record = {"input": str(src), "output": str(dst), "width": result.width, "height": result.height,
                      "bytes": len(result.data), "bpp": round(result.bpp, 6), "codebook_size": result.codebook_size,
                      "adapter": result.adapter, "coder": result.coder, "model": result.model,
                      "seconds": round(result.seconds, 4)}
            _emit(as_json, record, f"{src} -> {dst}  {result.width}x{result.height}  {len(result.data)} bytes  "
                                   f"{result.bpp:.4f} bpp  K~={result.codebook_size}  {result.seconds:.2f} s")
    if failures:
        sys.exit(EXIT_FAILED)


@main.command()
@_inputs
@click.option("-o", "--output", type=click.Path(), help="Output PNG (one input) or directory (several, or ending in /).")
@click.option("--model", default=None, help="Model name or path to try first (found by fingerprint otherwise).")
@_device
@_force
@_json
def decode(inputs: tuple[Path, ...], output: str | None, model: str | None, device: str, force: bool,
           as_json: bool) -> None:
    """Decode .raq files to PNG (photo.raq -> photo.png)."""
    from . import codec, imageio

    files = _files(inputs)
    pairs = [(f, _output_for(f, output, len(files) > 1, ".png")) for f in files]
    _check_outputs(pairs, force)
    failures: list[str] = []
    for src, dst in pairs:
        with _per_file(failures, src):
            started = time.perf_counter()
            image = codec.decode(_read_stream(src), model=model, device=device)
            dst.parent.mkdir(parents=True, exist_ok=True)
            imageio.save_png(image, dst)
            seconds = time.perf_counter() - started
            record = {"input": str(src), "output": str(dst), "width": image.width, "height": image.height,
                      "mode": image.mode, "seconds": round(seconds, 4)}
            _emit(as_json, record, f"{src} -> {dst}  {image.width}x{image.height} {image.mode}  {seconds:.2f} s")
    if failures:
        sys.exit(EXIT_FAILED)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", default=None, help="Model name or path to try first (found by fingerprint otherwise).")
@_json
def info(file: Path, model: str | None, as_json: bool) -> None:
    """Show the header of a .raq file, its size and bits per pixel, and (when its model is installed) the
    index payload in bits beside the order-0 empirical entropy of the index grid."""
    from .bitstream import summary as header_summary, unpack
    from . import ModelFileError
    from .codec import CodecError, inspect

    try:
        data = _read_stream(file)
        stream = unpack(data)
        summary = {"file": str(file), **header_summary(stream.header, len(data)),
                   "payload_bits": 8 * len(stream.indices_section), "order0_entropy_bits": None}
        try:  # the index grid needs the stream's model; the header alone does not
            details = inspect(data, model=model)
            summary.update(model=details["model"], order0_entropy_bits=round(details["order0_entropy_bits"], 1))
        except (CodecError, ModelFileError) as exc:
            _note(f"{file}: index grid not decoded ({exc})")
    except _user_errors() as exc:
        _say_error(f"{file}: {exc}")
        sys.exit(EXIT_FAILED)
    if as_json:
        click.echo(json.dumps(summary))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key, value in summary.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)


@main.command()
@_json
def models(as_json: bool) -> None:
    """List installed models: names, codebook-size range and reachable bitrates."""
    from . import registry
    from .model import MIN_CODEBOOK_SIZE

    entries = registry.available_models()
    rows = []
    for e in entries:
        card = e.card
        rows.append({"name": e.name, "default": e.name == registry.DEFAULT_MODEL, "path": str(e.path),
                     "k_range": card.get("k_range"),  # trained range; coding goes down to MIN_CODEBOOK_SIZE
                     "coding_range": [min(MIN_CODEBOOK_SIZE, card["k_range"][0]), card["k_range"][1]]
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


@main.command()
@click.argument("reference", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("distorted", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_json
def compare(reference: Path, distorted: Path, as_json: bool) -> None:
    """RGB PSNR (8-bit) of DISTORTED against REFERENCE."""
    from . import imageio

    try:
        a, b = imageio.load_image(reference), imageio.load_image(distorted)
    except _user_errors() as exc:
        _say_error(str(exc))
        sys.exit(EXIT_FAILED)
    if a.rgb.shape != b.rgb.shape:
        _say_error(f"sizes differ: {a.width}x{a.height} and {b.width}x{b.height}")
        sys.exit(EXIT_FAILED)
    value = imageio.psnr(a.rgb, b.rgb)
    identical = value == float("inf")
    _emit(as_json, {"reference": str(reference), "distorted": str(distorted),
                    "psnr": None if identical else round(value, 4), "identical": identical},  # JSON has no inf
          "identical pixels (PSNR infinite)" if identical else f"PSNR {value:.2f} dB")


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

    from .codec import CodecError, pick_device

    from .train import build_sources, load_recipe
    from .train import train as run_training

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
    from .export import export_run

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

    from . import registry
    from .train.context import ContextTrainConfig, install_context, prepare_grids, train_context as fit

    if threads:
        torch.set_num_threads(threads)
    if write_model is not None and write_model.exists() and not force:
        raise click.UsageError(f"{write_model} exists; pass --force to overwrite it")
    cfg = ContextTrainConfig(steps=steps, batch=batch, lr=lr, seed=seed)
    try:
        codec_model = registry.load(model)
        train_grids, valid_grids = prepare_grids(codec_model, list(data), out_dir, cfg)
    except _user_errors() + (ValueError,) as exc:
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
@click.option("--anchor", type=click.Choice(["raqcodec", "jpeg", "webp", "avif"]), default=None,
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
    from . import plot as rdplot
    from . import rd as engine
    from .baselines import BaselineUnavailable

    bpp = _number_list(bpp_list, float, "--bpp")
    sizes = _number_list(size_list, int, "--codebook-sizes")
    if bpp is not None and sizes is not None:
        raise click.UsageError("give at most one of --bpp and --codebook-sizes")
    if no_raq and sizes is not None:
        raise click.UsageError("--codebook-sizes measures raqcodec; it cannot go with --no-raq")
    metrics = _name_list(metric_list, engine.METRICS, "--metrics")
    if not metrics:
        raise click.BadParameter("give at least one metric", param_hint="--metrics")
    if plot_path is not None:
        try:
            rdplot.check_output(plot_path)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--plot") from None
    _check_new_files([output, per_image, plot_path], force)
    config = engine.RDConfig(inputs=list(inputs), bpp=bpp, codebook_sizes=sizes, raq=not no_raq,
                             baselines=_name_list(baseline_list, ("jpeg", "webp", "avif"), "--baselines"),
                             metrics=tuple(m for m in engine.METRICS if m in metrics), anchor=anchor,
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
    except _user_errors() as exc:
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
@click.option("--metric", type=click.Choice(["psnr", "ms-ssim"]), default="psnr", show_default=True)
@_force
def plot(results: tuple[Path, ...], output: Path, metric: str, force: bool) -> None:
    """Plot rate-distortion curves from `raqcodec rd -o` results files: one curve per codec and file."""
    from . import plot as rdplot

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
