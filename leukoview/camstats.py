"""Where do the Grad-CAM maps put their mass: on the stained cells or on the background and the image corners?

A simple colour segmentation splits each image (as the network sees it) into *stained* pixels (saturation above
its Otsu threshold: nuclei, cytoplasm, red cells), the *nucleus-dark* part of those (below the Otsu threshold of
brightness among stained pixels), *background* (the rest), and the four *corners* (squares of 15% of the side,
where scale bars and labels sit). For each region: the share of the map's mass and the share of the image's area;
a map that looks at the cells puts more mass on them than their area.

``python -m leukoview camstats BUNDLE`` computes the per-class means over the test split and writes them into the
bundle (``cam_stats.json``, recorded in the card).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

CAM_STATS = "cam_stats.json"
REGIONS = ("stained", "nucleus-dark", "background", "corners")


def otsu(values: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold of ``values`` (maximises the between-class variance)."""
    values = np.asarray(values, np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between))])


def regions(image: np.ndarray, *, corner: float = 0.15) -> dict[str, np.ndarray]:
    """Boolean masks of the regions of an HxWx3 uint8 image."""
    from PIL import Image

    hsv = np.asarray(Image.fromarray(image).convert("HSV"), np.float32)
    sat, gray = hsv[..., 1], image.astype(np.float32).mean(2)
    stained = sat > otsu(sat)
    nucleus = stained & (gray < otsu(gray[stained])) if stained.sum() > 16 else np.zeros_like(stained)
    h, w = stained.shape
    c = max(1, int(round(corner * min(h, w))))
    corners = np.zeros_like(stained)
    corners[:c, :c] = corners[:c, -c:] = corners[-c:, :c] = corners[-c:, -c:] = True
    return {"stained": stained, "nucleus-dark": nucleus, "background": ~stained, "corners": corners}


def mass_shares(mask: np.ndarray, parts: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per region: share of the CAM's mass and of the image's area."""
    total = float(mask.sum())
    return {name: {"mass": float(mask[m].sum() / total) if total > 0 else float("nan"), "area": float(m.mean())}
            for name, m in parts.items()}


def image_stats(ex) -> dict[str, dict[str, float]]:
    """Mass and area shares of one :class:`~leukoview.explain.Explanation`."""
    return mass_shares(ex.mask, regions(ex.image))


def bundle_stats(bundle_path: Path, root: Path, *, max_images: int = 0, progress: bool = True) -> dict:
    """Grad-CAM (target: the true class) over the bundle's test split; per-class and overall mean shares."""
    from tqdm import tqdm

    from . import explain
    from .images import load_image
    from .predict import Predictor
    from .transforms import resize_for_display

    p = Predictor(bundle_path)
    if not p.explainable:
        raise ValueError(f"{p.bundle.id} is a classical model: no Grad-CAM")
    pred = p.bundle.predictions()
    if max_images:
        pred = pred.groupby("label", group_keys=False).apply(
            lambda g: g.sample(min(len(g), max(1, max_images // pred["label"].nunique())), random_state=0))
    layer = p.bundle.card["cam_layer"]
    rows = []
    for f, label in tqdm(list(zip(pred["file"], pred["label"], strict=True)), desc="Grad-CAM", unit="img",
                         disable=not progress):
        img = load_image(Path(root) / f)
        mask = explain.cam_mask(p.model, layer, p.preprocess([img]), p.classes.index(label))
        shown = np.asarray(resize_for_display(img, p.spec))
        shares = mass_shares(mask, regions(shown))
        rows.append({"label": label, **{f"{r}|{k}": v[k] for r, v in shares.items() for k in ("mass", "area")}})
    df = pd.DataFrame(rows)

    def summary(part):
        return {r: {"mass": float(part[f"{r}|mass"].mean()), "area": float(part[f"{r}|area"].mean())}
                for r in REGIONS}

    return {"method": "Grad-CAM for the true class", "images": int(len(df)), "regions": list(REGIONS),
            "segmentation": "stained = HSV saturation above Otsu; nucleus-dark = stained and grey below Otsu of "
                            "stained pixels; corners = four squares of 15% of the side",
            "overall": summary(df), "per_class": {c: summary(g) for c, g in df.groupby("label")}}


def write(bundle_path: Path, stats: dict) -> None:
    from . import bundle as B

    b = B.load_bundle(bundle_path)
    B.write_json(b.path / CAM_STATS, stats)
    B.refinalize(b)


def load(bundle) -> dict | None:
    path = Path(bundle.path) / CAM_STATS
    if CAM_STATS not in bundle.card.get("files", {}) or not path.is_file():
        return None
    return json.loads(path.read_text())


def table(bundles) -> pd.DataFrame:
    """One row per bundle and class: CAM mass vs area on stained pixels, background and corners."""
    rows = []
    for b in bundles:
        s = load(b)
        if not s:
            continue
        for cls, part in {"all test images": s["overall"], **s["per_class"]}.items():
            rows.append({"model": b.id, "class": cls,
                         **{f"{r} mass": part[r]["mass"] for r in ("stained", "background", "corners")},
                         **{f"{r} area": part[r]["area"] for r in ("stained", "background", "corners")}})
    return pd.DataFrame(rows)
