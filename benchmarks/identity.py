"""Byte identity of encoded files across a restructuring: encode a fixed set of Kodak images through the
CLI at ``--bpp 0.2`` and at ``-k 256`` with the default model, decode each file again, and record the
SHA-256 of every ``.raq`` file and of its decoded pixels.

Run it on the commit before a change and on the commit after, then compare the two JSON files:

    python benchmarks/identity.py --data ../shared/data/kodak --label before
    python benchmarks/identity.py --data ../shared/data/kodak --label after
    python benchmarks/identity.py --compare benchmarks/results/identity_before.json \
        benchmarks/results/identity_after.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

IMAGES = ["kodim01", "kodim04", "kodim08", "kodim13", "kodim19", "kodim23"]
SETTINGS = {"bpp0.2": ["--bpp", "0.2"], "k256": ["-k", "256"]}
RESULTS = Path(__file__).parent / "results"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pixel_hash(path: Path) -> str:
    with Image.open(path) as img:
        img.load()
        arr = np.ascontiguousarray(np.asarray(img))
        return sha256(f"{img.mode}|{arr.shape}|".encode() + arr.tobytes())


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "raqcodec", *args], check=True, capture_output=True)


def measure(data: Path) -> dict[str, dict[str, str]]:
    rows: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in IMAGES:
            for setting, options in SETTINGS.items():
                raq = Path(tmp) / f"{name}-{setting}.raq"
                png = Path(tmp) / f"{name}-{setting}.png"
                cli("encode", str(data / f"{name}.png"), "-o", str(raq), "--force", "--device", "cpu", *options)
                cli("decode", str(raq), "-o", str(png), "--force", "--device", "cpu")
                rows[f"{name}@{setting}"] = {"raq_sha256": sha256(raq.read_bytes()), "pixels_sha256": pixel_hash(png)}
                print(f"{name}@{setting}: {rows[f'{name}@{setting}']['raq_sha256'][:16]}", flush=True)
    return rows


def compare(a: Path, b: Path) -> int:
    ra, rb = json.loads(a.read_text())["rows"], json.loads(b.read_text())["rows"]
    same = [k for k in ra if rb.get(k) == ra[k]]
    for k in sorted(set(ra) | set(rb)):
        print(f"{k}: {'equal' if k in same else 'DIFFERENT'}")
    print(f"{len(same)} of {len(ra)} equal ({a.name} vs {b.name})")
    return 0 if len(same) == len(ra) == len(rb) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="The Kodak folder (kodim01.png ... kodim24.png).")
    parser.add_argument("--label", default="run", help="Written to results/identity_<label>.json.")
    parser.add_argument("--compare", nargs=2, type=Path, metavar="JSON", help="Compare two results instead.")
    args = parser.parse_args()
    if args.compare:
        sys.exit(compare(*args.compare))
    if args.data is None:
        parser.error("give --data or --compare")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    start = time.perf_counter()
    rows = measure(args.data)
    out = RESULTS / f"identity_{args.label}.json"
    out.write_text(
        json.dumps(
            {
                "commit": commit,
                "model": "default",
                "settings": SETTINGS,
                "rows": rows,
                "seconds": round(time.perf_counter() - start, 1),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
