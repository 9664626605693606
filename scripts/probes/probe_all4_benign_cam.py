"""Probe: is the ALL model's low Grad-CAM mass on the cells of Benign fields a matter of *which* cell is explained?

A cell-level all4 model scores every lymphoid cell of a field; the pages and ``camstats`` explain the field's most
suspicious cell (the one a reviewer should look at). For a Benign field that is the most blast-like cell, and the
map explains the *Benign* class on it, which may be the field's weakest evidence for Benign. This probe computes the
Grad-CAM for Benign, with the shipped network and nothing refitted, on each Benign test field's

- most suspicious cell (what ``camstats`` and the pages use),
- least suspicious cell (the field's strongest evidence for Benign),
- every cell (mean over the field's cells),

and reports the share of the map's mass on stained pixels, as ``camstats`` does (target >= 0.60).

    python scripts/probes/probe_all4_benign_cam.py --bundle models/all4-efficientnet_lite0-cells-fieldhead
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from leukoview.audits.camstats import view_shares  # noqa: E402
from leukoview.jobs.predict import Predictor  # noqa: E402
from leukoview.primitives.images import load_image  # noqa: E402
from leukoview.primitives.segment import crop_cell  # noqa: E402
from leukoview.primitives.settings import data_root  # noqa: E402


def stained_mass(p: Predictor, layer: str, image, crop, target: int) -> float:
    return view_shares(p, layer, crop_cell(image, crop), target)[2]["stained"]["mass"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default="models/all4-efficientnet_lite0-cells-fieldhead")
    ap.add_argument("--fields", type=int, default=60, help="Benign test fields drawn (seed 0)")
    ap.add_argument("--out", default="reports/probe-all4-benign-cam.md")
    args = ap.parse_args()
    p = Predictor(args.bundle)
    if not p.cell_level:
        raise SystemExit(f"{args.bundle} does not score cells: nothing to choose between")
    root = data_root()
    layer, target = p.bundle.card.cam_layer, p.classes.index("Benign")
    pred = p.bundle.predictions()
    fields = pred[pred["label"] == "Benign"]
    fields = fields.sample(min(args.fields, len(fields)), random_state=0)
    rows = {"most suspicious cell (pages, camstats)": [], "least suspicious cell": [], "every cell (mean)": []}
    cells = []
    for f in fields["file"]:
        image = load_image(root / f)
        _, found, out = p.predict_cells(image)
        cells.append(len(found))
        each = [stained_mass(p, layer, image, c, target) for c in found]
        rows["most suspicious cell (pages, camstats)"].append(each[int(np.argmax(out["suspicion"]))])
        rows["least suspicious cell"].append(each[int(np.argmin(out["suspicion"]))])
        rows["every cell (mean)"].append(float(np.nanmean(each)))
    lines = [f"# Grad-CAM for Benign on Benign test fields: which cell is explained ({p.bundle.id})", "",
             f"`python scripts/probes/probe_all4_benign_cam.py --bundle {args.bundle} --fields {args.fields}`: "
             f"{len(fields)} Benign test fields (seed 0), {np.mean(cells):.1f} cells each on average; share of the "
             "map's mass on stained pixels (camstats' segmentation; target >= 0.60).", "",
             "| cell explained | stained mass (mean) | fields at >= 0.60 |", "|---|---|---|"]
    for name, v in rows.items():
        v = np.asarray(v, float)
        lines.append(f"| {name} | {np.nanmean(v):.3f} | {int((v >= 0.6).sum())}/{len(v)} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
