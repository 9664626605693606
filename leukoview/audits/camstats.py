"""Where do the Grad-CAM maps put their mass: on the stained cells or on the background and the image corners?

The colour segmentation of :mod:`leukoview.primitives.segment` splits each image (as the network sees it) into *stained*
pixels (nuclei, cytoplasm, red cells), the *nucleus-dark* part of those, *background* (the rest), and the four
*corners* (where scale bars and labels sit). For each region: the share of the map's mass and the share of the
image's area; a map that looks at the cells puts more mass on them than their area.

``python -m leukoview camstats BUNDLE`` computes the per-class means over the test split and writes them into the
bundle (``cam_stats.json``, through :func:`leukoview.models.bundle.update`); the comparison page shows them
(:func:`leukoview.app.compare.cam_table`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from leukoview import audits
from leukoview.models import bundle
from leukoview.primitives.images import load_image
from leukoview.primitives.segment import REGIONS, regions

CAM_STATS = bundle.CAM_STATS


def mass_shares(mask: np.ndarray, parts: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per region: share of the CAM's mass and of the image's area."""
    total = float(mask.sum())
    return {name: {"mass": float(mask[m].sum() / total) if total > 0 else float("nan"), "area": float(m.mean())}
            for name, m in parts.items()}


def image_stats(ex) -> dict[str, dict[str, float]]:
    """Mass and area shares of one :class:`~leukoview.jobs.explain.Explanation`."""
    return mass_shares(ex.mask, regions(ex.image))


def view_shares(p, layer: str, view, target: int) -> tuple:
    """Grad-CAM for class ``target`` on ``view`` (an image, or the located cell already cut out) and its region
    shares, on the image as the network sees it: (input tensor, mask, :func:`mass_shares`)."""
    from leukoview.jobs import explain
    from leukoview.models.transforms import resize_for_display

    x = p.preprocess([view], located=True)
    mask = explain.cam_mask(p.model, layer, x, target)
    shown = np.asarray(resize_for_display(view, p.spec, located=True))
    return x, mask, mass_shares(mask, regions(shown))


def bundle_stats(bundle_path: Path, root: Path, *, max_images: int = 0, progress: bool = True) -> dict:
    """Grad-CAM (target: the true class) over the bundle's test split; per-class and overall mean shares."""
    from tqdm import tqdm

    from leukoview.jobs import explain  # torch loads here, not when a page imports this module for its read-out
    from leukoview.jobs.predict import Predictor
    from leukoview.primitives.segment import crop_cell

    p = Predictor(bundle_path)
    if not p.explainable:
        raise ValueError(f"{p.bundle.id} is a classical model: no Grad-CAM")
    pred = p.bundle.predictions()
    if max_images:  # the same number from each class (pandas 3's groupby.apply drops the grouping column)
        per = max(1, max_images // pred["label"].nunique())
        pred = pd.concat([g.sample(min(len(g), per), random_state=0) for _, g in pred.groupby("label")])
    layer = p.bundle.card.cam_layer
    rows = []
    for f, label in tqdm(list(zip(pred["file"], pred["label"], strict=True)), desc="Grad-CAM", unit="img",
                         disable=not progress):
        img = load_image(Path(root) / f)
        crop = p.locate(img)  # as the pages explain it: the located cell (a cell-level model: its most suspicious)
        view = img if crop is None else crop_cell(img, crop)
        target = p.classes.index(label)
        x, mask, shares = view_shares(p, layer, view, target)
        gain = explain.faithfulness(p, x, mask, target)["gain"]
        deletion = explain.deletion_curve(p, x, mask, target)
        rows.append({"label": label, **{f"{r}|{k}": v[k] for r, v in shares.items() for k in ("mass", "area")},
                     "gain": gain, "deletion_advantage": deletion["advantage"], "auc_map": deletion["auc_map"],
                     "auc_random": deletion["auc_random"]})
    df = pd.DataFrame(rows)
    g = df["gain"].to_numpy()

    def summary(part):
        return {r: {"mass": float(part[f"{r}|mass"].mean()), "area": float(part[f"{r}|area"].mean())}
                for r in REGIONS}

    return {"method": "Grad-CAM for the true class", "images": int(len(df)), "regions": list(REGIONS),
            "segmentation": "stained = HSV saturation above Otsu; nucleus-dark = stained and grey below Otsu of "
                            "stained pixels; corners = four squares of 15% of the side",
            "overall": summary(df), "per_class": {c: summary(part) for c, part in df.groupby("label")},
            "faithfulness_band": {"p10": float(np.quantile(g, 0.1)), "p25": float(np.quantile(g, 0.25)),
                                  "p50": float(np.median(g)), "p90": float(np.quantile(g, 0.9)),
                                  "share_positive": float((g > 0).mean()), "images": int(len(g)),
                                  "what": "gain = fall in the true class's probability when the map's top 20% of "
                                          "pixels are removed, minus the fall for random blocks of the same area"},
            "deletion": {"what": "deletion test: mean probability of the true class as the top 5-50% of the map's "
                                 "pixels are removed, against random pixels; advantage = random - map (> 0: the map "
                                 "finds what the model uses)",
                         "auc_map": float(df["auc_map"].mean()), "auc_random": float(df["auc_random"].mean()),
                         "advantage": float(df["deletion_advantage"].mean()),
                         "share_positive": float((df["deletion_advantage"] > 0).mean()),
                         "per_class": {c: float(part["deletion_advantage"].mean())
                                       for c, part in df.groupby("label")}}}


def write(bundle_path: Path, stats: dict) -> None:
    audits.store(bundle_path, audits.CAM_STATS, stats)


def load(b) -> dict | None:
    """The bundle's stored statistics, or None when ``camstats`` was not run on it."""
    return audits.result(b, audits.CAM_STATS)


def run(bundle_path: Path, root: Path | None = None, *, max_images: int = 0, progress: bool = True) -> dict:
    """The audit's one entry: :func:`bundle_stats`, stored in the bundle (``cam_stats.json``)."""
    from leukoview.primitives import settings

    stats = bundle_stats(Path(bundle_path), Path(root) if root else settings.data_root(), max_images=max_images,
                         progress=progress)
    write(bundle_path, stats)
    return stats
