"""The training photos a recipe holds out (every ``holdout_every``-th file in sorted order), one path per
line: what encoder settings are validated on besides Kodak, so that nothing is tuned on Kodak alone.

    raqcodec rd $(python benchmarks/heldout_photos.py ../shared/data/train --every 3) --effort 2 \
        --bpp 0.1,0.2,0.3 --baselines none --metrics psnr -j 2 -o benchmarks/results/heldout_effort2.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from raqcodec.train.data import list_images
from raqcodec.train.recipe import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, nargs="+", help="The training data folders (as given to training).")
    parser.add_argument("--holdout-every", type=int, default=TrainConfig().holdout_every)
    parser.add_argument("--every", type=int, default=1, help="Keep every n-th held-out photo (a smaller set).")
    args = parser.parse_args()
    for path in list_images(args.data)[:: args.holdout_every][:: args.every]:
        print(path)


if __name__ == "__main__":
    main()
