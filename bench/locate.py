"""The cell-locating step on real images: how often it finds a cell, how large the crop is, and what it costs.

    python -m bench.locate [--per-set 60] [--seed 0]

For each image set under the data root (all4, wbc5, pbc_extra, bccd_wbc, cnmc_sample): a random sample of
``--per-set`` images, the share where a cell is found (else the whole image is used), the median crop side as a
share of the image side, and the median time of the step alone (decoded image in, box out).
"""
import argparse
import random
import time

import numpy as np

from leukoview.primitives import settings
from leukoview.primitives.images import find_images, load_image
from leukoview.primitives.segment import locate_cell

SETS = ("all4", "wbc5", "pbc_extra", "bccd_wbc", "cnmc_sample")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-set", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    print("| set | images | cell found | median crop side / image side | median ms per image |")
    print("|---|---|---|---|---|")
    for name in SETS:
        files = find_images(settings.data_root() / name)
        if not files:
            continue
        picks = rng.sample(files, min(a.per_set, len(files)))
        found, sides, times = 0, [], []
        for f in picks:
            img = load_image(f)
            t = time.perf_counter()
            crop = locate_cell(img)
            times.append((time.perf_counter() - t) * 1000)
            found += crop.found
            sides.append(crop.side / max(img.size))
        print(f"| {name} | {len(picks)} | {found}/{len(picks)} | {np.median(sides):.2f} | {np.median(times):.1f} |")


if __name__ == "__main__":
    main()
