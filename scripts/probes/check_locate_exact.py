"""Do the cell-locating functions of this checkout give the same boxes as those of another commit, on every real
image of the data root? For a change meant to make them faster without changing what they find.

    LEUKOVIEW_DATA_ROOT=../shared/data python scripts/check_locate_exact.py [--rev 622918d] [--step 1]

Compares ``locate_cell`` (default framing, and ``min_side=0.5, inside=True``) and ``find_cells``; prints every
image whose boxes differ, the count, and each version's median time of ``find_cells``.
"""
import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from leukoview.primitives import segment, settings  # noqa: E402
from leukoview.primitives.images import find_images, load_image  # noqa: E402

SETS = ("all4", "wbc5", "pbc_extra", "bccd_wbc", "cnmc_sample")


def module_at(rev: str):
    source = subprocess.run(["git", "show", f"{rev}:leukoview/primitives/segment.py"], check=True, capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parents[2]).stdout
    path = Path(tempfile.mkdtemp()) / "segment_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("segment_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["segment_at_rev"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="622918d", help="the commit to compare with (default: before the speed-up)")
    ap.add_argument("--step", type=int, default=1, help="every n-th image of each set (default: all)")
    a = ap.parse_args()
    old = module_at(a.rev)
    n = differ = 0
    times = {"then": [], "now": []}
    for name in SETS:
        for f in find_images(settings.data_root() / name)[::a.step]:
            img = load_image(f)
            n += 1
            same = True
            for kw in ({}, {"min_side": 0.5, "inside": True}):
                x, y = old.locate_cell(img, **kw), segment.locate_cell(img, **kw)
                same &= (x.box, x.found) == (y.box, y.found)
            t = time.perf_counter()
            x = old.find_cells(img)
            times["then"].append(time.perf_counter() - t)
            t = time.perf_counter()
            y = segment.find_cells(img)
            times["now"].append(time.perf_counter() - t)
            same &= [c.box for c in x] == [c.box for c in y]
            if not same:
                differ += 1
                print(f"differs: {f}")
    print(f"{n} images, {differ} with different boxes; find_cells median "
          f"{np.median(times['then']) * 1000:.2f} ms at {a.rev} -> {np.median(times['now']) * 1000:.2f} ms now")


if __name__ == "__main__":
    main()
