"""Probe: would a *predicted-class* distance flag catch the false alarms that today's OOD flag lets through?

Today's flag (leukoview.primitives.ood) fires when a cell's penultimate features are far from the *nearest* training
class mean. A BCCD lymphocyte can sit near the platelet mean (so it is not flagged) and still be called myeloblast: its
call does not agree with where its features are. This probe measures, with the shipped network and nothing refitted
on external data, a second distance: to the mean of the class the model *calls* (same PCA space and covariance as the
shipped detector), with a per-class threshold at the 99th percentile of the validation images called that class.

It prints and writes (``--out``, default reports/probe-class-ood.md) the flag rates on the bundle's own validation and
test splits and, for an external folder (evaluation only: nothing is fitted on it), the normal cells called positive
and how many of them each flag leaves unflagged.

    python scripts/probes/probe_class_ood.py --bundle models/wbc9-efficientnet_lite0-reinhard \\
        --external bccd_wbc --map Neutrophil=neutrophil
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from leukoview.audits.external import class_folders, parse_mapping, resolve_mapping  # noqa: E402
from leukoview.jobs.predict import Predictor  # noqa: E402
from leukoview.models.bundle import load_bundle  # noqa: E402
from leukoview.primitives.images import load_image  # noqa: E402
from leukoview.primitives.settings import data_root  # noqa: E402


def class_distances(state: dict, features: np.ndarray) -> np.ndarray:
    """Mahalanobis distance of every row to every class mean (n x classes), in the detector's PCA space."""
    z = (np.asarray(features, np.float32) - state["mean"]) @ state["components"].T
    diffs = z[:, None, :] - state["class_means"][None, :, :]
    return np.sqrt(np.maximum(np.einsum("nck,kl,ncl->nc", diffs, state["precision"], diffs), 0))


def outputs(p: Predictor, paths: list[Path]) -> dict[str, np.ndarray]:
    logits, feats, colours = [], [], []
    for i in range(0, len(paths), 32):
        images = [load_image(f) for f in paths[i:i + 32]]
        lg, ft = p.raw_outputs([p.prepare(im) for im in images])
        logits.append(lg)
        feats.append(ft)
        pal = p.palette_distances(images)
        colours.append(pal if pal is not None else np.full(len(images), np.nan))
    logits, feats = np.concatenate(logits), np.concatenate(feats)
    out = p.outputs(logits, feats, palette=np.concatenate(colours))
    out["distances"] = class_distances(p.ood, feats)
    return out


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--external", help="a labelled folder relative to the data root (evaluation only)")
    ap.add_argument("--map", nargs="*", default=[], help="Folder=class, as `python -m leukoview external`")
    ap.add_argument("--quantile", type=float, default=0.99)
    ap.add_argument("--out", default="reports/probe-class-ood.md")
    a = ap.parse_args(argv)
    root = data_root()
    b = load_bundle(a.bundle)
    p = Predictor(b)
    split = b.split()
    runs = {s: outputs(p, [root / f for f in split.loc[split["split"] == s, "file"]]) for s in ("val", "test")}
    classes = list(p.classes)
    # the detector's class means are in np.unique order of the training targets (class indices:
    # leukoview.primitives.ood.fit_ood)
    assert len(p.ood["class_means"]) == len(classes)

    def called_distance(out):
        called = out["probs"].argmax(1)
        return out["distances"][np.arange(len(called)), called], called

    d_val, called_val = called_distance(runs["val"])
    thresholds = {k: float(np.quantile(d_val[called_val == k], a.quantile)) if (called_val == k).any() else np.inf
                  for k in range(len(classes))}

    def class_flag(out):
        d, called = called_distance(out)
        return d > np.array([thresholds[k] for k in called])

    lines = [f"# Predicted-class distance flag: {b.id}", "",
             "Written by scripts/probes/probe_class_ood.py. Per-class thresholds: the "
             f"{a.quantile:.2f} quantile of the distance to the called class's mean over validation images called "
             "that class. Nothing is fitted on the external folder.", "",
             "| images | n | today's flag | predicted-class flag | either |", "|---|---|---|---|---|"]
    for s, out in runs.items():
        f0, f1 = out["ood_flag"], class_flag(out)
        lines.append(f"| own {s} | {len(f0)} | {f0.mean():.3f} | {f1.mean():.3f} | {(f0 | f1).mean():.3f} |")
    if a.external:
        folder = root / a.external
        folders = class_folders(folder)
        mapping = resolve_mapping(list(folders), classes, parse_mapping(a.map))
        rows = []
        for name, files in folders.items():
            out = outputs(p, files)
            f0, f1 = out["ood_flag"], class_flag(out)
            pos = out["decision"]
            rows.append({"folder": name, "n": len(files), "own type": mapping.get(name),
                         "called positive": int(pos.sum()), "positive, not flagged today": int((pos & ~f0).sum()),
                         "positive, not flagged by either": int((pos & ~(f0 | f1)).sum()),
                         "flagged today": float(f0.mean()), "flagged by either": float((f0 | f1).mean())})
        df = pd.DataFrame(rows)
        n = int(df["n"].sum())
        lines += ["", f"## {a.external} (evaluation only)", "",
                  "| folder | n | called positive | positive, not flagged today | positive, not flagged by either | "
                  "flagged today | flagged by either |", "|---|---|---|---|---|---|---|"]
        for r in df.itertuples(index=False):
            lines.append(f"| {r.folder} | {r.n} | {r[3]} | {r[4]} | {r[5]} | {r[6]:.3f} | {r[7]:.3f} |")
        lines.append(f"| all | {n} | {df['called positive'].sum()} | {df['positive, not flagged today'].sum()} "
                     f"({df['positive, not flagged today'].sum() / n:.3f}) | "
                     f"{df['positive, not flagged by either'].sum()} "
                     f"({df['positive, not flagged by either'].sum() / n:.3f}) | "
                     f"{(df['flagged today'] * df['n']).sum() / n:.3f} | "
                     f"{(df['flagged by either'] * df['n']).sum() / n:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(a.out).write_text(text)
    return text


if __name__ == "__main__":
    main()
