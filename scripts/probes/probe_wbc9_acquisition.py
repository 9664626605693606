"""Probe: is it the camera's resolution or the lab's tight framing that sends another lab's normal cells to
"myeloblast" / "platelet"? Own test cells (never another lab's) are degraded the way the BCCD crops differ from
PBC's, and the shipped model's calls are counted.

- resolution: the whole image down-sampled to a share of its side and back (a low-resolution camera), optionally
  blurred;
- framing: the image cut to a square around the located nucleus of k times its side (BCCD crops are about 1.5x:
  the cell fills the crop, so the locating square reaches past the image and is padded), optionally down-sampled.

If the calls hold under both, neither explains the BCCD figures and what is left is the stain and optics of the
other lab (which own images cannot imitate).

``--external`` (a labelled folder of another lab, evaluation only: nothing is fitted on it) adds a context row set:
its cells as the network sees them with everything but the stained cell (leukoview.primitives.augment's cell mask)
replaced by a flat PBC-like colour, by white, or by the background of an own PBC image: does the other lab's context
carry the calls, or the cell? Writes ``--out`` (default reports/probe-wbc9-acquisition.md).

    python scripts/probes/probe_wbc9_acquisition.py --bundle models/wbc9-efficientnet_lite0-reinhard --external bccd_wbc
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from leukoview.audits.external import class_folders  # noqa: E402
from leukoview.jobs.predict import Predictor  # noqa: E402
from leukoview.models.transforms import network_view  # noqa: E402
from leukoview.primitives.augment import background_only, replace_background  # noqa: E402
from leukoview.primitives.images import load_image  # noqa: E402
from leukoview.primitives.settings import data_root  # noqa: E402

CLASSES = ("eosinophil", "lymphocyte", "monocyte", "neutrophil")  # BCCD's types with enough cells


def resample(im: Image.Image, share: float, blur: float = 0.0) -> Image.Image:
    w, h = im.size
    out = im.resize((max(8, round(w * share)), max(8, round(h * share))), Image.BILINEAR).resize((w, h),
                                                                                                 Image.BILINEAR)
    return out.filter(ImageFilter.GaussianBlur(blur)) if blur else out


def tight(p: Predictor, im: Image.Image, k: float, share: float = 1.0) -> Image.Image:
    crop = p.locate(im)
    left, top, right, bottom = crop.box
    side = (right - left) / float(p.spec["locate"].get("scale", 1.6)) * k
    cx, cy = (left + right) / 2, (top + bottom) / 2
    im = im.crop((int(max(0, cx - side / 2)), int(max(0, cy - side / 2)), int(min(im.width, cx + side / 2)),
                  int(min(im.height, cy + side / 2))))
    if share < 1:
        w, h = im.size
        im = im.resize((max(8, round(w * share)), max(8, round(h * share))), Image.BILINEAR)
    return im


def context_rows(p: Predictor, root: Path, external: str, folders: list[str], test: pd.DataFrame) -> list[str]:
    """The external set's cells, as the network sees them, with their context replaced (see the docstring)."""
    sets = class_folders(root / external)
    own = [network_view(load_image(root / f), p.spec) for f in test["file"].head(20)]
    backgrounds = [background_only(v) for v in own]
    contexts = {"as recorded": lambda v, i: v,
                "flat PBC-like colour": lambda v, i: replace_background(v, np.array([240.0, 225.0, 205.0])),
                "white": lambda v, i: replace_background(v, np.full(3, 255.0)),
                "an own PBC image's background": lambda v, i: replace_background(
                    v, np.asarray(Image.fromarray(backgrounds[i % len(backgrounds)].astype(np.uint8)).resize(v.size),
                                  np.float32))}
    names = [f for f in folders if f in sets]
    lines = ["", f"## {external} cells with their context replaced (evaluation only)", "",
             "Each cell: share called its own type / share called positive (the most common call, with its count).",
             "", "| context | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    views = {n: [network_view(load_image(f), p.spec) for f in sets[n]] for n in names}
    for name, fn in contexts.items():
        cells = []
        for n in names:
            out = p.predict_prepared([p.prepare(fn(v, i), located=True) for i, v in enumerate(views[n])])
            called = pd.Series(np.asarray(p.classes)[out["probs"].argmax(1)])
            top = called.value_counts()
            cells.append(f"{(called == n.lower()).mean():.2f} / {out['decision'].mean():.2f} "
                         f"({top.index[0]} {top.iloc[0]})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--external", help="a labelled folder of another lab, relative to the data root (evaluation only)")
    ap.add_argument("--folders", nargs="*", default=["Lymphocyte", "Monocyte", "Eosinophil", "Neutrophil"])
    ap.add_argument("--out", default="reports/probe-wbc9-acquisition.md")
    a = ap.parse_args(argv)
    root = data_root()
    p = Predictor(a.bundle)
    if "locate" not in p.spec:
        raise SystemExit(f"{p.bundle.id} does not locate the cell: the framing rows need a locating step")
    split = p.bundle.split()
    test = split[(split["split"] == "test") & split["label"].isin(CLASSES)]
    cells = {lab: [load_image(root / f) for f in g["file"].head(a.per_class)] for lab, g in test.groupby("label")}
    variants = {"as recorded": lambda im: im,
                "resolution 50%": lambda im: resample(im, 0.5), "resolution 30%": lambda im: resample(im, 0.3),
                "resolution 20%": lambda im: resample(im, 0.2),
                "resolution 30% + blur 2 px": lambda im: resample(im, 0.3, 2.0),
                "tight crop 1.5x nucleus": lambda im: tight(p, im, 1.5),
                "tight crop 1.2x nucleus": lambda im: tight(p, im, 1.2),
                "tight crop 1.5x + 60% size": lambda im: tight(p, im, 1.5, 0.6)}
    rows = []
    for name, fn in variants.items():
        row = {"variant": name}
        for lab, images in cells.items():
            out = p.predict_batch([fn(im) for im in images])
            called = np.asarray(p.classes)[out["probs"].argmax(1)]
            top = pd.Series(called[called != lab]).value_counts()
            row[lab] = (f"{(called == lab).mean():.2f} / {out['decision'].mean():.2f}"
                        + (f" ({top.index[0]} {top.iloc[0]})" if len(top) else ""))
        rows.append(row)
    lines = [f"# Resolution and framing of own test cells: {p.bundle.id}", "",
             f"Written by scripts/probes/probe_wbc9_acquisition.py; {a.per_class} own test images per type. Each cell: "
             "share called its own type / share called positive (the most common wrong call, with its count).", "",
             "| variant | " + " | ".join(cells) + " |", "|---" * (len(cells) + 1) + "|"]
    lines += ["| " + " | ".join(str(r[c]) for c in ("variant", *cells)) + " |" for r in rows]
    if a.external:
        lines += context_rows(p, root, a.external, a.folders, test)
    text = "\n".join(lines) + "\n"
    print(text)
    Path(a.out).write_text(text)
    return text


if __name__ == "__main__":
    main()
