"""Probe: can a field model tell a single-cell crop from a smear field, and what does the rule cost?

The largest cell's inscribed radius (leukoview.primitives.segment.find_cells) over the image's shorter side, on 150
images of each set; then the recommended ALL field model scores BCCD (another lab's single-cell crops, evaluation only)
and its own test split, and the share that gets a verdict (positive or negative, not 'cannot assess') is counted.

    LEUKOVIEW_DATA_ROOT=../shared/data python scripts/probes/probe_input_kind.py [--out reports/probe-input-kind.md]
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from leukoview.jobs.predict import FIELD_MAX_CELL, Predictor, score_files  # noqa: E402
from leukoview.models.bundle import load_bundle  # noqa: E402
from leukoview.primitives import settings  # noqa: E402
from leukoview.primitives.images import find_images, load_image  # noqa: E402
from leukoview.primitives.segment import find_cells  # noqa: E402
from leukoview.primitives.tasks import TASKS  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def radius(path: Path) -> float:
    img = load_image(path)
    cells = find_cells(img)
    return cells[0].side / (2 * 1.8) / min(img.size) if cells else 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    root = settings.data_root()
    lines = ["# Input kind: single-cell crop or smear field", "",
             "`python scripts/probes/probe_input_kind.py`: the largest cell's inscribed radius over the image's "
             f"shorter side (find_cells), 150 images a set (seed 0); the field model's rule flags above "
             f"{FIELD_MAX_CELL}.", "", "| set | kind | 1st pct | 5th pct | median | 95th pct | 99th pct |",
             "|---|---|---|---|---|---|---|"]
    for name, kind in (("all4", "fields"), ("wbc5", "single cells"), ("pbc_extra", "single cells"),
                       ("deepapl", "single cells"), ("bccd_wbc", "single cells"), ("cnmc_sample", "single cells")):
        files = find_images(root / name)
        random.Random(0).shuffle(files)
        r = np.array([radius(p) for p in files[:150]])
        q = np.quantile(r, [0.01, 0.05, 0.5, 0.95, 0.99])
        lines.append(f"| {name} | {kind} | " + " | ".join(f"{v:.3f}" for v in q) + " |")
    b = load_bundle(REPO / "models" / TASKS["all4"].recommended)
    p = Predictor(b)
    lines += ["", f"Scored with {b.id}:", "", "| images | n | verdict (positive or negative) | cannot assess | "
              "of which wrong kind |", "|---|---|---|---|---|"]
    test = [root / f for f in b.predictions()["file"]]
    for label, files, base in (("BCCD single-cell crops (another lab)", find_images(root / "bccd_wbc"),
                                root / "bccd_wbc"), ("own all4 test split (fields)", test, root)):
        df = score_files(files, p, base=base)
        ok = df[df["error"] == ""]
        verdict = ok["decision"].isin(["positive", "negative"])
        kind = ok["wrong_kind"] != ""
        lines.append(f"| {label} | {len(ok)} | {verdict.mean():.1%} ({int(verdict.sum())}) | "
                     f"{(ok['decision'] == 'cannot assess').mean():.1%} | {kind.mean():.1%} ({int(kind.sum())}) |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
