"""How long `leukoview.primitives.segment.find_cells` takes per all4 field, and how many cells it finds, at thumbnail
sides 224 (shipped), 160 and 128.

    python -m bench.cells [--n 80]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from leukoview.primitives import segment, settings
    from leukoview.primitives.images import find_images, load_image

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=80, help="fields, evenly spaced over the all4 folder")
    args = ap.parse_args(argv)
    files = find_images(Path(settings.data_root()) / "all4")
    files = files[:: max(1, len(files) // args.n)][: args.n]
    images = [load_image(f) for f in files]
    shipped = segment.CELLS_SIDE
    try:
        for side in (224, 160, 128):
            segment.CELLS_SIDE = side
            t = time.perf_counter()
            counts = [len(segment.find_cells(im)) for im in images]
            ms = (time.perf_counter() - t) / len(images) * 1000
            print(f"thumbnail side {side}: {ms:.1f} ms per field, {np.mean(counts):.2f} cells on average "
                  f"({len(images)} fields)")
    finally:
        segment.CELLS_SIDE = shipped
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
