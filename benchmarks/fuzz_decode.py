"""Fuzz the decoder with mutated and truncated ``.raq`` streams.

Seeds are small images encoded with the model (both entropy coders, several codebook sizes, with and
without alpha, gray 16-bit). Each case mutates one seed: bit flips, byte overwrites, truncation,
insertions, deletions, rewritten header fields, or a replaced index section. Most mutations are
followed by a recomputed CRC (and section lengths that agree with the file), so that the damage
reaches the header checks, the model lookup and the entropy decoders instead of stopping at the CRC.

Every case must either decode to an image of the declared size or raise one of raqcodec's user errors
(the CLI prints those as one line and exits 1) with a one-line message, within ``--timeout`` seconds.
Anything else (another exception, a multi-line message, a hang) is a failure, listed in the results.
The process's peak RSS is reported: it bounds the memory of every case.

    python benchmarks/fuzz_decode.py --cases 10000 -o benchmarks/results/fuzz_decode.json
    python benchmarks/fuzz_decode.py --cases 200 --model path/to/model.safetensors   # quick

Mutators are plain functions of (stream, numpy Generator) so the test suite runs a short version of
this fuzzer with the tiny test model (tests/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import signal
import struct
import sys
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import raqcodec
from raqcodec.errors import USER_ERRORS
from raqcodec.io import bitstream

# (offset, size) of the header fields a mutation may rewrite; offsets as in docs/FORMAT.md
HEADER_FIELDS = {
    "version": (4, 1),
    "flags": (5, 1),
    "fingerprint": (6, 8),
    "adapter": (14, 1),
    "codebook_size": (15, 2),
    "codebook_crc": (17, 4),
    "width": (21, 2),
    "height": (23, 2),
    "mode": (25, 1),
    "bit_depth": (26, 1),
    "index_len": (27, 4),
    "alpha_len": (31, 4),
    "coder": (35, 1),
    "context_checksum": (36, 4),
}
_LENGTHS = struct.Struct(">II")


# ---------------------------------------------------------------- mutators


def fix_crc(data: bytes) -> bytes:
    """The stream with its trailing CRC recomputed (no-op on streams too short to have one)."""
    if len(data) < bitstream.MIN_FILE_SIZE:
        return data
    body = data[: -bitstream.CRC_SIZE]
    return body + struct.pack(">I", zlib.crc32(body))


def fix_lengths(data: bytes) -> bytes:
    """Make the index section length account for the file (alpha length kept), so the parser accepts
    a changed length and hands the damaged section on."""
    if len(data) < bitstream.HEADER_SIZE + bitstream.CRC_SIZE or data[4] != 2:
        return data
    _, alpha_len = _LENGTHS.unpack_from(data, 27)
    index_len = len(data) - bitstream.HEADER_SIZE - bitstream.CRC_SIZE - alpha_len
    if index_len < 1:
        return data
    return data[:27] + _LENGTHS.pack(index_len, alpha_len) + data[35:]


def flip_bits(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        out[int(rng.integers(len(out)))] ^= 1 << int(rng.integers(8))
    return bytes(out)


def overwrite_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    start = int(rng.integers(len(out)))
    chunk = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
    out[start : start + len(chunk)] = chunk[: len(out) - start]
    return bytes(out)


def truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(len(data)))]


def insert_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    at = int(rng.integers(len(data) + 1))
    return data[:at] + rng.integers(0, 256, int(rng.integers(1, 65)), dtype=np.uint8).tobytes() + data[at:]


def delete_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    at = int(rng.integers(len(data)))
    return data[:at] + data[at + int(rng.integers(1, 65)) :]


def rewrite_field(data: bytes, rng: np.random.Generator) -> bytes:
    """A header field set to an extreme or random value (0, all ones, +-1, random)."""
    name = list(HEADER_FIELDS)[int(rng.integers(len(HEADER_FIELDS)))]
    offset, size = HEADER_FIELDS[name]
    if offset + size > len(data):
        return data
    old = int.from_bytes(data[offset : offset + size], "big")
    top = (1 << (8 * size)) - 1
    value = [0, top, (old + 1) & top, (old - 1) & top, int.from_bytes(rng.bytes(size), "big")][int(rng.integers(5))]
    return data[:offset] + value.to_bytes(size, "big") + data[offset + size :]


def replace_index_section(data: bytes, rng: np.random.Generator) -> bytes:
    """Random bytes (of a random length) in place of the index section, lengths kept consistent."""
    if len(data) < bitstream.HEADER_SIZE + bitstream.CRC_SIZE or data[4] != 2:
        return data
    index_len, alpha_len = _LENGTHS.unpack_from(data, 27)
    start = bitstream.HEADER_SIZE
    section = rng.integers(0, 256, int(rng.integers(1, 2 * index_len + 2)), dtype=np.uint8).tobytes()
    if rng.random() < 0.5:  # keep the context section's valid shape: 1 byte + whole 32-bit words
        section = section[: 1 + 4 * ((len(section) - 1) // 4)] or b"\0"
    rest = data[start + index_len :]
    return data[:27] + _LENGTHS.pack(len(section), alpha_len) + data[35:start] + section + rest


MUTATORS: dict[str, Callable[[bytes, np.random.Generator], bytes]] = {
    "flip_bits": flip_bits,
    "overwrite_bytes": overwrite_bytes,
    "truncate": truncate,
    "insert_bytes": insert_bytes,
    "delete_bytes": delete_bytes,
    "rewrite_field": rewrite_field,
    "replace_index_section": replace_index_section,
}


def mutate(seed: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """(description, mutated stream). Three cases in four get consistent lengths and a valid CRC."""
    name = list(MUTATORS)[int(rng.integers(len(MUTATORS)))]
    data = MUTATORS[name](seed, rng)
    if name != "truncate" and rng.random() < 0.75:
        if name in ("insert_bytes", "delete_bytes"):
            data = fix_lengths(data)
        data = fix_crc(data)
        name += "+crc"
    return name, data


# ---------------------------------------------------------------- running cases


class CaseTimeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise CaseTimeout()


def run_case(data: bytes, model: Any, timeout: float) -> tuple[str, str]:
    """("decoded" | "rejected" | "FAILED", detail) for one stream."""
    allowed = USER_ERRORS
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        image = raqcodec.decode(data, model=model, device="cpu")
        header = bitstream.read_header(data)
        if image.size != (header.width, header.height):
            return "FAILED", f"decoded {image.size}, header says {header.width}x{header.height}"
        return "decoded", ""
    except CaseTimeout:
        return "FAILED", f"no result within {timeout} s"
    except allowed as exc:
        message = str(exc)
        if not message or "\n" in message:
            return "FAILED", f"{type(exc).__name__} with a message that is not one line: {message!r}"
        return "rejected", f"{type(exc).__name__}: {message}"
    except Exception as exc:  # noqa: BLE001 - a bug the fuzzer is here to find
        return "FAILED", "".join(traceback.format_exception_only(type(exc), exc)).strip()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def make_seeds(model: Any, sizes: tuple[int, ...]) -> list[bytes]:
    """Small streams covering both coders, several K~, alpha and 16-bit gray."""
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:96]
    rgb = np.stack([(np.sin(x / 9.0 + c) * 80 + 128 + rng.normal(0, 8, x.shape)) for c in range(3)], -1)
    rgb = np.clip(rgb + y[..., None] * 0.5, 0, 255).astype(np.uint8)
    rgba = np.concatenate([rgb[:40, :40], (x[:40, :40, None] * 6 % 256).astype(np.uint8)], -1)
    images = [Image.fromarray(rgb), Image.fromarray(rgba, "RGBA"), Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)]
    coders = ["order0"] + (["context"] if getattr(model, "context", None) is not None else [])
    seeds = []
    for image in images:
        for size in sizes:
            for coder in coders:
                seeds.append(raqcodec.encode(image, codebook_size=size, model=model, entropy=coder, refine=0))
    for size in sizes:
        # A rewritten adapter byte asks for the cluster codebook of the seed's size. Computing one is a
        # one-time cost per machine (inverse DKM: about 30 s at K~ = 1024, then cached on disk), not a
        # property of the stream, so it is paid here, before any case is timed.
        model.codebook("cluster", size)
    return seeds


def fuzz(
    model: Any,
    cases: int,
    seed: int = 0,
    timeout: float = 10.0,
    sizes: tuple[int, ...] = (2, 16, 1024),
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    lo, hi = model.size_range
    seeds = make_seeds(model, tuple(sorted({min(max(s, lo), hi) for s in sizes})))
    rng = np.random.default_rng(seed)
    outcomes: Counter[str] = Counter()
    by_mutation: dict[str, Counter[str]] = {}
    failures: list[dict[str, Any]] = []
    slowest = 0.0
    for i in range(cases):
        name, data = mutate(seeds[int(rng.integers(len(seeds)))], rng)
        started = time.perf_counter()
        outcome, detail = run_case(data, model, timeout)
        slowest = max(slowest, time.perf_counter() - started)
        outcomes[outcome] += 1
        by_mutation.setdefault(name, Counter())[outcome] += 1
        if outcome == "FAILED":
            failures.append({"case": i, "mutation": name, "detail": detail, "stream_hex": data.hex()[:2000]})
        if progress:
            progress(i + 1)
    return {
        "cases": cases,
        "seed": seed,
        "seeds": len(seeds),
        "timeout_seconds": timeout,
        "outcomes": dict(outcomes),
        "by_mutation": {k: dict(v) for k, v in sorted(by_mutation.items())},
        "slowest_case_seconds": slowest,
        "failures": failures,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0, help="Seconds a case may take.")
    parser.add_argument("--model", default=None, help="Model name or path (default: the bundled default).")
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).parent / "results" / "fuzz_decode.json")
    args = parser.parse_args()
    import torch
    from rich.progress import Progress

    torch.set_num_threads(1)  # small streams: threads cost more than they give
    model = raqcodec.load_model(args.model)
    started = time.perf_counter()
    with Progress(transient=True) as bar:
        task = bar.add_task("fuzzing", total=args.cases)
        result = fuzz(model, args.cases, args.seed, args.timeout, progress=lambda n: bar.update(task, completed=n))
    result |= {
        "model": model.name,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "python": platform.python_version(),
        "raqcodec": raqcodec.__version__,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{result['cases']} cases: {result['outcomes']}; slowest {result['slowest_case_seconds']:.2f} s; "
        f"peak RSS {result['peak_rss_mib']:.0f} MiB -> {args.output}"
    )
    for failure in result["failures"][:20]:
        print(f"  case {failure['case']} ({failure['mutation']}): {failure['detail']}")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
