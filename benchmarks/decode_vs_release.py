"""Decode time against an earlier release, on this machine: how much the current code's decoding grows.

Each side runs in its own process from its own source tree (the release is checked out into a temporary
git worktree) with its own bundled default model. Both encode the same image at the same --bpp budget,
then time decoding its own file in process, model loaded (what a batch job sees). Rounds alternate
between the two sides so that drift in the machine's load affects both alike; the figure is the
difference of the medians over all rounds. Results go to a JSON file.

    python benchmarks/decode_vs_release.py --image ../shared/data/kodak/kodim23.png

The default release is 0.1.0 (format version 1, order-0 index coding).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RELEASE_0_1_0 = "5d06318"  # the last commit of 0.1.0 (CHANGELOG: 2026-11-22)

# Run inside each side's process: encode once, decode `repeats` times, print the seconds as JSON.
TIMER = """
import json, sys, time
import raqcodec
image, bpp, repeats = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
data = raqcodec.encode(image, bpp=bpp)
raqcodec.decode(data)  # warm-up: first-call costs are not decode time
seconds = []
for _ in range(repeats):
    started = time.perf_counter()
    raqcodec.decode(data)
    seconds.append(time.perf_counter() - started)
print(json.dumps({"bytes": len(data), "seconds": seconds, "module": raqcodec.__file__}))
"""


def timed(source: Path, image: Path, bpp: float, repeats: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(source))
    proc = subprocess.run(
        [sys.executable, "-c", TIMER, str(image), str(bpp), str(repeats)],
        env=env,
        capture_output=True,
        text=True,
        cwd=source,
    )
    if proc.returncode != 0:
        raise SystemExit(f"timing {source} failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if not Path(result["module"]).resolve().is_relative_to(source.resolve()):
        raise SystemExit(f"{source}: imported raqcodec from {result['module']}, not from that tree")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=ROOT.parent / "shared" / "data" / "kodak" / "kodim23.png")
    parser.add_argument("--bpp", type=float, default=0.3)
    parser.add_argument("--release", default=RELEASE_0_1_0, help="git revision of the earlier release")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="decodes per side and round")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results" / "decode_vs_release.json")
    args = parser.parse_args()
    if not args.image.is_file():
        raise SystemExit(f"no image at {args.image}")
    with tempfile.TemporaryDirectory() as tmp:
        release = Path(tmp) / "release"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(release), args.release], check=True
        )
        try:
            sides: dict[str, dict] = {"release": {"seconds": []}, "current": {"seconds": []}}
            for _ in range(args.rounds):
                for name, source in (("release", release), ("current", ROOT)):
                    run = timed(source, args.image.resolve(), args.bpp, args.repeats)
                    sides[name]["seconds"] += run["seconds"]
                    sides[name]["bytes"] = run["bytes"]
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(release)], check=True)
    for side in sides.values():
        side["median_s"] = statistics.median(side["seconds"])
    growth = sides["current"]["median_s"] - sides["release"]["median_s"]
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    result = {
        "image": str(args.image),
        "bpp": args.bpp,
        "release": args.release,
        "current": commit,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "sides": sides,
        "growth_s": growth,
        "load_average": os.getloadavg(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"decode median: release {args.release} {sides['release']['median_s']:.3f} s "
        f"({sides['release']['bytes']} bytes), current {commit} {sides['current']['median_s']:.3f} s "
        f"({sides['current']['bytes']} bytes): {growth:+.3f} s -> {args.output}"
    )


if __name__ == "__main__":
    main()
