"""Where do the cell-level ALL model's test errors come from? A cheap screen before any retraining: the shipped
all4-efficientnet_lite0-cells network's per-cell logits and features over its whole saved split, then

- other ways of making a field's call from its cells (mean of logits = the shipped rule, median, the most
  confident cell, a vote), and
- a linear head refitted on the *field-mean* features of the train split (the network frozen; the inverse
  regularisation chosen on the validation split only). A linear head of mean features equals the mean of the
  cells' logits, so such a head would be a drop-in change of the bundle's classifier, nothing else.

Prints validation and test accuracy for each, and the test errors by file-number run. Writes the table to
``--out`` (default reports/probe-all4-cells-head.md). Features are cached in /tmp.

    LEUKOVIEW_DATA_ROOT=../shared/data python scripts/probes/probe_all4_cells_head.py
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from leukoview.jobs.predict import Predictor  # noqa: E402
from leukoview.models.transforms import cell_arrays  # noqa: E402
from leukoview.primitives import settings  # noqa: E402
from leukoview.primitives.images import load_image  # noqa: E402


def cell_outputs(pred: Predictor, files: list[str], root: Path, cache: Path) -> dict:
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        if list(z["files"]) == files:
            return {k: z[k] for k in z.files}
    logits, feats, owner = [], [], []
    for i, f in enumerate(tqdm(files, desc="cells", unit="field")):
        _, arrays = cell_arrays(load_image(root / f), pred.spec)
        lg, ft = pred._run(list(arrays))
        logits.append(lg)
        feats.append(ft)
        owner.append(np.full(len(lg), i))
    out = {"files": np.array(files), "logits": np.concatenate(logits), "feats": np.concatenate(feats),
           "owner": np.concatenate(owner)}
    np.savez(cache, **out)
    return out


def by_field(values: np.ndarray, owner: np.ndarray, n: int, how: str) -> np.ndarray:
    rows = []
    for i in range(n):
        v = values[owner == i]
        if how == "mean":
            rows.append(v.mean(0))
        elif how == "median":
            rows.append(np.median(v, 0))
        elif how == "confident":  # the cell with the largest top-class margin
            srt = np.sort(v, 1)
            rows.append(v[int(np.argmax(srt[:, -1] - srt[:, -2]))])
        elif how == "vote":
            votes = np.bincount(v.argmax(1), minlength=v.shape[1]).astype(float)
            rows.append(votes + 1e-3 * v.mean(0))  # ties broken by the mean
    return np.stack(rows)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default="models/all4-efficientnet_lite0-cells")
    ap.add_argument("--out", default="reports/probe-all4-cells-head.md")
    ap.add_argument("--cache", default="/tmp/probe_all4_cells.npz")
    args = ap.parse_args()

    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    pred = Predictor(args.bundle)
    split = pred.bundle.split().reset_index(drop=True)
    classes = pred.bundle.classes
    y = split["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    z = cell_outputs(pred, split["file"].tolist(), settings.data_root(), Path(args.cache))
    n = len(split)
    part = split["split"].to_numpy()
    lines = [f"# Probe: where the cell-level ALL model's errors come from ({args.bundle})", "",
             "`LEUKOVIEW_DATA_ROOT=../shared/data python scripts/probes/probe_all4_cells_head.py` "
             f"({n} fields, {len(z['owner'])} cells; the network frozen).", "",
             "| field call | val accuracy | test accuracy | test errors |", "|---|---|---|---|"]

    def row(name: str, scores: np.ndarray) -> np.ndarray:
        call = scores.argmax(1)
        acc = {p: float((call[part == p] == y[part == p]).mean()) for p in ("val", "test")}
        wrong = int((call[part == "test"] != y[part == "test"]).sum())
        lines.append(f"| {name} | {acc['val']:.3f} | {acc['test']:.3f} | {wrong} |")
        print(f"{name:45s} val {acc['val']:.3f} test {acc['test']:.3f} ({wrong} wrong)")
        return call

    shipped = row("mean of cell logits (shipped)", by_field(z["logits"], z["owner"], n, "mean"))
    for how in ("median", "confident", "vote"):
        row(f"{how} of cell logits", by_field(z["logits"], z["owner"], n, how))
    cell_right = (z["logits"].argmax(1) == y[z["owner"]])
    for p in ("val", "test"):
        keep = part[z["owner"]] == p
        print(f"per-cell accuracy {p}: {cell_right[keep].mean():.3f} over {keep.sum()} cells")
        lines.append(f"\nPer-cell accuracy ({p}, each cell against its field's label): "
                     f"{cell_right[keep].mean():.3f} over {int(keep.sum())} cells.")

    mean_feats = by_field(z["feats"], z["owner"], n, "mean")
    scaler = StandardScaler().fit(mean_feats[part == "train"])
    xs = scaler.transform(mean_feats)
    best = None
    lines += ["", "| field-mean head, C | val accuracy | test accuracy |", "|---|---|---|"]
    for c in (0.001, 0.01, 0.1, 1.0):
        head = LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(xs[part == "train"],
                                                                                   y[part == "train"])
        call = head.predict(xs)
        va, te = ((call[part == p] == y[part == p]).mean() for p in ("val", "test"))
        lines.append(f"| {c} | {va:.3f} | {te:.3f} |")
        print(f"field-mean head C={c}: val {va:.3f} test {te:.3f}")
        if best is None or va > best[0]:
            best = (va, c, te)
    lines.append(f"\nChosen on validation: C={best[1]} (val {best[0]:.3f}) → test {best[2]:.3f}.")

    test = split[part == "test"].assign(call=[classes[i] for i in shipped[part == "test"]])
    wrong = test[test["call"] != test["label"]]
    lines += ["", "Test errors of the shipped rule (file, label → call):", ""]
    for _, r in wrong.iterrows():
        num = re.findall(r"(\d+)", Path(r["file"]).stem)
        lines.append(f"- {Path(r['file']).name}: {r['label']} → {r['call']}"
                     + (f" (file number {int(num[-1])})" if num else ""))
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
