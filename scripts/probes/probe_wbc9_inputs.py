"""Which input normalisation lets a leukocyte model read another lab's cells? A cheap screen (no fine-tuning):
frozen ImageNet EfficientNet-Lite0 features of the located cell under several input normalisations, a 9-type
logistic regression fitted on a class-balanced subset of wbc9's train split (the shipped bundle's split), read on
wbc9's test split and on bccd_wbc (external evaluation only: nothing is fitted or selected on it here; the table
is a screen for the next fine-tune, whose own validation split decides its epochs and threshold).

    python scripts/probes/probe_wbc9_inputs.py [--per-class 200] [--size 160] [--out reports/probe-wbc9-inputs.md]

Each row is printed as it is measured (a Python dict per line); the table is written to ``--out`` at the end.
``--rows-from LOG`` rewrites the table from such printed rows without measuring again.

Variants (each applied after the locating step, at train and test time alike):
  crop        the located cell as the shipped model sees it
  bg          its background (unstained pixels) moved to one fixed colour
  reinhard    every channel of CIELAB standardised to fixed means and spreads (Reinhard colour transfer)
  res<N>      down-sampled to N px and back up (one coarse resolution for every camera)
  grey        luminance only
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from leukoview.primitives import settings  # noqa: E402
from leukoview.primitives.augment import (
    normalise_lab,  # noqa: E402
    recolour_background,  # noqa: E402
)
from leukoview.primitives.images import find_images, load_image  # noqa: E402
from leukoview.primitives.segment import crop_cell, locate_cell  # noqa: E402

BCCD_MAP = {"Neutrophil": "neutrophil", "Eosinophil": "eosinophil", "Lymphocyte": "lymphocyte",
            "Monocyte": "monocyte", "Basophil": "basophil"}


def variant(img: Image.Image, name: str) -> Image.Image:
    for part in name.split("+"):
        if part == "crop":
            continue
        if part == "bg":
            img = recolour_background(img, (220, 220, 220))
        elif part == "reinhard":
            img = normalise_lab(img)
        elif part.startswith("res"):
            n = int(part[3:])
            w, h = img.size
            img = img.resize((n, n), Image.Resampling.BILINEAR).resize((w, h), Image.Resampling.BILINEAR)
        elif part == "grey":
            img = img.convert("L").convert("RGB")
        else:
            raise ValueError(part)
    return img


def embed(images, size: int) -> np.ndarray:
    import torch

    from leukoview.models.archs import get_arch
    from leukoview.models.transforms import normalise_batch

    if not hasattr(embed, "model"):
        model, _ = get_arch("efficientnet_lite0").build(1, pretrained=True)
        model._fc = torch.nn.Identity()
        embed.model = model.eval()
    spec = {"mean": [0.5] * 3, "std": [0.5] * 3}
    arrays = [np.asarray(im.resize((size, size), Image.Resampling.BILINEAR), np.uint8) for im in images]
    out = []
    with torch.inference_mode():
        for i in range(0, len(arrays), 32):
            out.append(embed.model(torch.from_numpy(normalise_batch(arrays[i:i + 32], spec))).numpy())
    return np.concatenate(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--variants", default="crop,bg,reinhard,res64,bg+res64,reinhard+res64,grey")
    ap.add_argument("--out", default="reports/probe-wbc9-inputs.md")
    ap.add_argument("--rows-from", help="a log of this script's printed rows: write their table only")
    args = ap.parse_args()
    if args.rows_from:
        import ast

        rows = [ast.literal_eval(line) for line in Path(args.rows_from).read_text().splitlines()
                if line.startswith("{'variant'")]
        write_table(rows, Path(args.out), args)
        return 0
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    torch.set_num_threads(2)
    root = Path(settings.data_root())
    split = pd.read_csv("models/wbc9-efficientnet_lite0/split.csv")
    rng = np.random.default_rng(0)
    parts = {}
    for name, n in (("train", args.per_class), ("test", args.per_class // 2)):
        rows = split[split.split == name]
        parts[name] = pd.concat([g.iloc[rng.permutation(len(g))[:n]] for _, g in rows.groupby("label")])
    files = {k: [root / f for f in v.file] for k, v in parts.items()}
    files["bccd"] = find_images(root / "bccd_wbc")
    labels = {k: list(v.label) for k, v in parts.items()}
    labels["bccd"] = [BCCD_MAP[f.parent.name] for f in files["bccd"]]
    crops = {}
    for k, fs in files.items():
        crops[k] = []
        for f in fs:
            im = load_image(f)
            crops[k].append(crop_cell(im, locate_cell(im)))
    rows = []
    for v in args.variants.split(","):
        x = {k: embed([variant(c, v) for c in cs], args.size) for k, cs in crops.items()}
        sc = StandardScaler().fit(x["train"])
        clf = LogisticRegression(C=0.5, max_iter=2000).fit(sc.transform(x["train"]), labels["train"])
        pred = {k: clf.predict(sc.transform(x[k])) for k in x}
        test_acc = float(np.mean(pred["test"] == np.array(labels["test"])))
        yb, pb = np.array(labels["bccd"]), pred["bccd"]
        row = {"variant": v, "own test acc": round(test_acc, 3),
               "BCCD called myeloblast": round(float(np.mean(pb == "myeloblast")), 3)}
        for c in ("neutrophil", "eosinophil", "lymphocyte", "monocyte"):
            row[f"BCCD {c}"] = round(float(np.mean(pb[yb == c] == c)), 3)
        row["BCCD balanced"] = round(float(np.mean([row[f"BCCD {c}"] for c in
                                                    ("neutrophil", "eosinophil", "lymphocyte", "monocyte")])), 3)
        rows.append(row)
        print(row, flush=True)
    write_table(rows, Path(args.out), args)
    return 0


def write_table(rows: list[dict], out: Path, args) -> None:
    cols = list(rows[0])
    lines = [f"Frozen ImageNet EfficientNet-Lite0 features of the located cell + logistic regression, "
             f"{args.per_class} train images per type (wbc9 split of models/wbc9-efficientnet_lite0), "
             f"{args.size} px; own test: {args.per_class // 2} per type; BCCD: all 351 (evaluation only). "
             "Written by scripts/probes/probe_wbc9_inputs.py.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
