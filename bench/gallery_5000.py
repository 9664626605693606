"""The batch page with a 5,000-image folder in a real browser: score it, draw the gallery, turn a page, review a few
cells with the keyboard; report the Streamlit server's peak resident memory (its VmHWM, children included) and the
times.

    python -m bench.gallery_5000 [--n 5000] [--bundle models/<the recommended wbc9 model>] [--keys 10]

The images are generated smear-like JPEGs (:func:`bench.load_5000.make_images`) in a temporary data root."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.load_5000 import make_images
from bench.review_flow import IMAGES_JS, LOADED_JS, REPO, idle, open_folder, served, wait_for_keys
from leukoview.primitives.tasks import recommended_for


def peak_mb(pid: int) -> float:
    """Peak resident memory of a process (VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--bundle", default=str(REPO / "models" / recommended_for("wbc9")))
    ap.add_argument("--keys", type=int, default=10)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        make_images(root / "slide", a.n, 224)
        with served(Path(a.bundle), root, Path(tmp)) as (proc, port, page):
            t0 = time.perf_counter()
            open_folder(page, port, "0:slide", "Benchmark")
            scored = time.perf_counter() - t0
            before = page.evaluate(IMAGES_JS)
            t0 = time.perf_counter()
            page.locator('[data-testid="stNumberInput"] input').first.fill("50")
            page.keyboard.press("Enter")
            page.wait_for_function(f"(old) => ({IMAGES_JS})() !== old && ({LOADED_JS})()", arg=before,
                                   timeout=60_000)
            flip = time.perf_counter() - t0
            idle(page)
            page.get_by_text("Keyboard review").click()
            idle(page)
            wait_for_keys(page)
            page.locator("h1").first.click()
            for k in range(a.keys):
                page.keyboard.press("c")
                page.wait_for_function("s => document.body.innerText.includes(s)",
                                       arg=f"reviewed {k + 1} of {a.n}", timeout=30_000)
            idle(page)
            mb = peak_mb(proc.pid)
    print(f"{a.n} images: scored and first gallery page in {scored:.1f} s; gallery page 50 drawn and loaded in "
          f"{flip:.2f} s; {a.keys} cells confirmed with the keyboard")
    print(f"peak resident memory of the Streamlit server: {mb:.0f} MB (target < 2048 MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
