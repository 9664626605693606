"""``python -m bench``: the speed benchmark, every fast path against the naive way in the same run, as one
Markdown table (see :mod:`bench.benchmark`). Needs the real data root for the throughput rows; Playwright and
Debian chromium for the cold-start row (skipped with a message without them)."""
from __future__ import annotations

import argparse
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench import benchmark
from leukoview.primitives import settings
from leukoview.primitives.images import find_images


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default=str(settings.models_dir() / "all4-efficientnet_lite0"))
    p.add_argument("--folder", default="all4", help="image folder under the data root (default all4)")
    p.add_argument("--n", type=int, default=256, help="images for the throughput comparison")
    p.add_argument("--runs", type=int, default=30, help="repetitions for the single-image median")
    p.add_argument("--no-cold-start", dest="no_cold_start", action="store_true")
    p.add_argument("--no-memory", dest="no_memory", action="store_true", help="skip the 5,000-image run")
    p.add_argument("--out", help="also write the table to this Markdown file (bench/last_run.md)")
    a = p.parse_args(argv)
    root = settings.data_root()
    images = find_images(root / a.folder) if (root / a.folder).is_dir() else []
    if len(images) < a.n:
        print(f"need {a.n} images under {root / a.folder}, found {len(images)}; set LEUKOVIEW_DATA_ROOT",
              file=sys.stderr)
        return 2
    step = len(images) / a.n
    images = [images[int(i * step)] for i in range(a.n)]  # spread over every class folder
    rows = benchmark.run(Path(a.bundle), images, runs=a.runs, cold=not a.no_cold_start, memory=not a.no_memory,
                         progress=lambda m: print(m, file=sys.stderr, flush=True))
    head = (f"`python -m bench` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPU cores "
            f"({platform.processor() or platform.machine()}), 2 threads, bundle {Path(a.bundle).name}")
    text = head + "\n\n" + benchmark.format_table(rows) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
