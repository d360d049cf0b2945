"""Decoded-pixel identity: encode a set of images once, then decode every stream through the CLI twice
and through the API once, and record the SHA-256 of the decoded pixels.

The JSON it writes (streams and hashes) is also a reference: run it with --check REF.json on another
machine or --device to verify that the same streams decode to the same pixels there.

    python benchmarks/decode_identity.py --data ../shared/data/kodak --bpp 0.3
    python benchmarks/decode_identity.py --check benchmarks/results/decode_identity.json --device cuda
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

import raqcodec


def pixel_hash(image: Image.Image) -> str:
    arr = np.ascontiguousarray(np.asarray(image))
    return hashlib.sha256(f"{image.mode}|{arr.shape}|".encode() + arr.tobytes()).hexdigest()


def cli_decode(raq: Path, png: Path, device: str) -> str:
    subprocess.run(
        [sys.executable, "-m", "raqcodec", "decode", str(raq), "-o", str(png), "--force", "--device", device],
        check=True,
        capture_output=True,
    )
    with Image.open(png) as img:
        img.load()
        return pixel_hash(img)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="Folder of images to encode (PNG).")
    parser.add_argument("--bpp", type=float, default=0.3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--check", type=Path, help="A JSON written by this script: decode its streams here.")
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).parent / "results" / "decode_identity.json")
    args = parser.parse_args()

    if args.check:
        reference = json.loads(args.check.read_text())
        streams = {r["image"]: base64.b64decode(r["stream"]) for r in reference["rows"]}
        expected = {r["image"]: r["sha256"] for r in reference["rows"]}
    else:
        if args.data is None:
            parser.error("give --data or --check")
        images = sorted(args.data.glob("*.png"))
        streams = {p.name: raqcodec.encode(p, bpp=args.bpp, device=args.device) for p in images}
        expected = {}

    rows, mismatches = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in streams.items():
            raq = Path(tmp) / f"{Path(name).stem}.raq"
            raq.write_bytes(data)
            first = cli_decode(raq, Path(tmp) / "a.png", args.device)
            second = cli_decode(raq, Path(tmp) / "b.png", args.device)
            api = pixel_hash(raqcodec.decode(data, device=args.device))
            same = first == second == api and expected.get(name, api) == api
            mismatches += not same
            rows.append(
                {
                    "image": name,
                    "bytes": len(data),
                    "sha256": api,
                    "cli_twice_and_api_identical": same,
                    "stream": base64.b64encode(data).decode(),
                }
            )
    print(
        f"{len(rows) - mismatches}/{len(rows)} streams decode to identical pixels "
        f"(CLI twice, API once{', and the reference' if expected else ''}) on {args.device}"
    )
    if not args.check:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"device": args.device, "bpp": args.bpp, "rows": rows}, indent=1) + "\n")
        print(f"-> {args.output}")
    sys.exit(1 if mismatches else 0)


if __name__ == "__main__":
    main()
