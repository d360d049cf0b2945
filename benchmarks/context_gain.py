"""What the context model saves on Kodak at fixed codebook sizes, against order-0 coding of the same grids.

For every image and every --sizes K~, the image is encoded at that codebook size through the codec (the
default context coder, default refinement) and its index grid read back with ``raqcodec.inspect``. Reported
per image and summed per K~:

* ``payload_bits``: the index section of the real file (the context coder's rANS payload);
* ``order0_entropy_bits``: the order-0 empirical entropy of the same grid, times its size (the bound no
  order-0 coder beats, its table not even counted);
* ``previous_release_bytes``: the file the previous release (format version 1, order-0 coder) writes for
  the same grid: its 35-byte header + the order-0 index section + 4-byte CRC. The order-0 coder is
  unchanged since that release (``raqcodec.entropy.order0``; tests/test_golden.py decodes that release's files),
  so the section is computed here with it rather than by installing the old release.

    python benchmarks/context_gain.py --data ../shared/data/kodak
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

import raqcodec
from raqcodec.entropy import order0 as entropy
from raqcodec.io import bitstream
from raqcodec.io.atomic import atomic_path
from raqcodec.model.loaded import CodecModel

VERSION1_OVERHEAD = 35 + 4  # version-1 header + CRC


def measure(image: Path, size: int, model: CodecModel) -> dict[str, Any]:
    result = raqcodec.encode_detailed(image, codebook_size=size, model=model)
    info = raqcodec.inspect(result.data, model=model)
    order0_section = entropy.encode_indices(info["indices"].ravel(), size)
    previous = VERSION1_OVERHEAD + len(order0_section)
    return {
        "image": image.name,
        "codebook_size": size,
        "coder": bitstream.read_header(result.data).coder,
        "bytes": len(result.data),
        "payload_bits": info["payload_bits"],
        "order0_entropy_bits": info["order0_entropy_bits"],
        "previous_release_bytes": previous,
        "smaller_than_previous": len(result.data) < previous,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="Folder of Kodak PNGs.")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 128, 1024])
    parser.add_argument("--model", default=None)
    parser.add_argument("--images", type=int, default=None, help="Only the first N images (quick checks).")
    parser.add_argument("--limit", type=float, default=0.80, help="Required payload / order-0 entropy ratio.")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "context_gain.json")
    args = parser.parse_args(argv)
    images = sorted(args.data.glob("*.png"))[: args.images]
    if not images:
        raise SystemExit(f"no PNG images in {args.data}")
    model = raqcodec.load_model(args.model)
    rows, summary = [], []
    for size in args.sizes:
        per_size = [measure(p, size, model) for p in images]
        rows += per_size
        payload = sum(r["payload_bits"] for r in per_size)
        h0 = sum(r["order0_entropy_bits"] for r in per_size)
        entry = {
            "codebook_size": size,
            "payload_bits": payload,
            "order0_entropy_bits": round(h0, 1),
            "ratio": payload / h0,
            "ratio_ok": payload / h0 <= args.limit,
            "bytes": sum(r["bytes"] for r in per_size),
            "previous_release_bytes": sum(r["previous_release_bytes"] for r in per_size),
            "every_image_smaller": all(r["smaller_than_previous"] for r in per_size),
        }
        summary.append(entry)
        print(
            f"K~={size:5d}: payload / order-0 entropy = {entry['ratio']:.4f} (limit {args.limit}); files "
            f"{entry['bytes']} vs previous release {entry['previous_release_bytes']} bytes "
            f"({entry['bytes'] / entry['previous_release_bytes'] - 1:+.1%}); every image smaller: "
            f"{entry['every_image_smaller']}",
            flush=True,
        )
    result = {
        "dataset": str(args.data),
        "images": len(images),
        "model": model.name,
        "context_checksum": f"{model.context.checksum:08x}" if model.context else None,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "summary": summary,
        "rows": rows,
    }
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
