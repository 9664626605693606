"""Probe: is it the camera's resolution or the lab's tight framing that sends another lab's normal cells to
"myeloblast" / "platelet"? Own test cells (never another lab's) are degraded the way the BCCD crops differ from
PBC's, and the shipped model's calls are counted.

- resolution: the whole image down-sampled to a share of its side and back (a low-resolution camera), optionally
  blurred;
- framing: the image cut to a square around the located nucleus of k times its side (BCCD crops are about 1.5x:
  the cell fills the crop, so the locating square reaches past the image and is padded), optionally down-sampled.

If the calls hold under both, neither explains the BCCD figures and what is left is the stain and optics of the
other lab (which own images cannot imitate). Writes ``--out`` (default reports/probe-wbc9-acquisition.md).

    python scripts/probe_wbc9_acquisition.py --bundle models/wbc9-efficientnet_lite0-reinhard
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from leukoview.images import load_image  # noqa: E402
from leukoview.predict import Predictor  # noqa: E402
from leukoview.settings import data_root  # noqa: E402

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


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--per-class", type=int, default=60)
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
             f"Written by scripts/probe_wbc9_acquisition.py; {a.per_class} own test images per type. Each cell: "
             "share called its own type / share called positive (the most common wrong call, with its count).", "",
             "| variant | " + " | ".join(cells) + " |", "|---" * (len(cells) + 1) + "|"]
    lines += ["| " + " | ".join(str(r[c]) for c in ("variant", *cells)) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(a.out).write_text(text)
    return text


if __name__ == "__main__":
    main()
