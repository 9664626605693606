"""Load check: score a folder of N synthetic images (default 5,000) and report time and peak memory.

    python -m bench.load_5000 [--n 5000] [--bundle models/all4-efficientnet_lite0] [--size 224]

The images are generated in a temporary folder (nothing from the data root). Prints images/s, the number of
progress updates (the batch page redraws its bar on each) and the peak resident memory of the process.
"""
import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from leukoview.jobs.predict import Predictor, score_folder
from leukoview.primitives import settings


def make_images(folder: Path, n: int, size: int) -> None:
    """``n`` smear-like JPEGs (a pale pink field with camera grain and two to four violet cells), 1,000 a subfolder:
    they pass the input gate, so every one is scored."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        arr = np.empty((size, size, 3), np.float32)
        arr[:] = (235, 215, 220)
        for _ in range(int(rng.integers(2, 5))):
            cy, cx = rng.integers(size // 6, 5 * size // 6, 2)
            r = int(rng.integers(size // 14, size // 7))
            arr[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (120, 60, 170)
        arr += rng.normal(0, 4, arr.shape)
        sub = folder / f"set{i // 1000}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(sub / f"cell_{i:05d}.jpg", quality=85)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--bundle", default=str(settings.models_dir() / "all4-efficientnet_lite0"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        make_images(folder, a.n, a.size)
        print(f"generated {a.n} JPEGs of {a.size}x{a.size} in {time.perf_counter() - t:.1f} s")
        predictor = Predictor(a.bundle)
        updates = []
        t = time.perf_counter()
        df = score_folder(folder, predictor, progress=lambda d, total: updates.append((time.perf_counter(), d)))
        secs = time.perf_counter() - t
    gaps = np.diff([t] + [u[0] for u in updates])
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"scored {len(df)} images ({int((df['error'] != '').sum())} errors) in {secs:.1f} s = "
          f"{len(df) / secs:.1f} images/s")
    print(f"progress updates: {len(updates)}, longest gap between updates {gaps.max():.2f} s")
    print(f"peak resident memory of this process: {peak_mb:.0f} MB (target < 2048 MB)")


if __name__ == "__main__":
    main()
