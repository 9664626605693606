"""Stain and acquisition shift: the augmentation that trains models to rely on the cell, and the shift test that
re-renders a bundle's test split under controlled shifts and measures what each costs.

Operations (PIL RGB in, PIL RGB out):

- :func:`hed_jitter`: stain variation in haematoxylin-eosin-DAB optical-density space (Ruifrok & Johnston 2001
  colour deconvolution; Tellez et al. 2018 style scale and shift per stain);
- :func:`recolour_background`: the unstained background (see :func:`leukoview.camstats.regions`) recoloured,
  keeping its texture (what a different scanner or illumination does);
- :func:`rescale`: zoom in (centre crop) or out (shrink and pad with the background colour);
- blur and JPEG re-compression.

``python -m leukoview shift BUNDLE`` evaluates every shift of :data:`SHIFTS` and stores the metrics in the bundle's
``metrics.json`` (key ``shift``); the comparison page shows them.
"""
from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

# Ruifrok & Johnston stain vectors (rows: haematoxylin, eosin, DAB), optical density per RGB channel
_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], np.float64)
_HED /= np.linalg.norm(_HED, axis=1, keepdims=True)
_HED_INV = np.linalg.inv(_HED).astype(np.float32)
_HED = _HED.astype(np.float32)


def hed_jitter(img: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    """Scale each stain's concentration by U(1-sigma, 1+sigma) and shift it by U(-sigma, sigma)."""
    rgb = np.asarray(img, np.float32)
    od = -np.log((rgb + 1) / 256)
    conc = od.reshape(-1, 3) @ _HED_INV
    alpha = rng.uniform(1 - sigma, 1 + sigma, 3).astype(np.float32)
    beta = rng.uniform(-sigma, sigma, 3).astype(np.float32)
    conc = conc * alpha + beta
    out = 256 * np.exp(-(conc @ _HED)) - 1
    return Image.fromarray(np.clip(out.reshape(rgb.shape), 0, 255).astype(np.uint8))


def background_mask(img: Image.Image) -> np.ndarray:
    from .camstats import regions

    return regions(np.asarray(img))["background"]


def background_colour(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img, np.float64)
    mask = background_mask(img)
    return np.median(arr[mask], 0) if mask.any() else arr.reshape(-1, 3).mean(0)


def recolour_background(img: Image.Image, colour) -> Image.Image:
    """Move the background's colour to ``colour`` (RGB), keeping its texture; stained pixels are untouched."""
    arr = np.asarray(img, np.float64).copy()
    mask = background_mask(img)
    if mask.any():
        arr[mask] += np.asarray(colour, np.float64) - np.median(arr[mask], 0)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def rescale(img: Image.Image, factor: float) -> Image.Image:
    """``factor`` > 1 zooms in (centre crop), < 1 zooms out (shrink, pad with the background colour)."""
    w, h = img.size
    if factor >= 1:
        cw, ch = int(round(w / factor)), int(round(h / factor))
        left, top = (w - cw) // 2, (h - ch) // 2
        return img.crop((left, top, left + cw, top + ch)).resize((w, h), Image.Resampling.BILINEAR)
    small = img.resize((max(1, int(round(w * factor))), max(1, int(round(h * factor)))), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (w, h), tuple(int(v) for v in background_colour(img)))
    canvas.paste(small, ((w - small.width) // 2, (h - small.height) // 2))
    return canvas


def blur(img: Image.Image, sigma: float) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(sigma))


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


class AcquisitionJitter:
    """Training augmentation: each operation applied with its probability, with random strength."""

    def __init__(self, *, stain: float = 0.1, p_grey: float = 0.1, p_background: float = 0.5,
                 p_rescale: float = 0.3, p_blur: float = 0.3, p_jpeg: float = 0.3):
        self.stain, self.p_grey, self.p_background = stain, p_grey, p_background
        self.p_rescale, self.p_blur, self.p_jpeg = p_rescale, p_blur, p_jpeg

    def __call__(self, img: Image.Image) -> Image.Image:
        rng = np.random.default_rng(random.getrandbits(32))
        if self.stain:
            img = hed_jitter(img, self.stain, rng)
        if rng.random() < self.p_background:  # a pale background of random tint (any scanner's)
            img = recolour_background(img, rng.uniform([170, 170, 170], [250, 250, 250]))
        if rng.random() < self.p_rescale:
            img = rescale(img, float(rng.uniform(0.7, 1.4)))
        if rng.random() < self.p_blur:
            img = blur(img, float(rng.uniform(0.3, 1.5)))
        if rng.random() < self.p_jpeg:
            img = jpeg(img, int(rng.integers(30, 90)))
        if rng.random() < self.p_grey:
            img = img.convert("L").convert("RGB")
        return img


# --------------------------------------------------------------------------------------------- shift test

SHIFTS = {  # name -> (operation, strength); "background" recolours to the farthest class's background colour
    "none": ("none", 0),
    "stain jitter 0.05": ("stain", 0.05),
    "stain jitter 0.1": ("stain", 0.1),
    "stain jitter 0.2": ("stain", 0.2),
    "background of another class": ("background", 0),
    "zoom out x0.75": ("scale", 0.75),
    "zoom in x1.33": ("scale", 1.33),
    "blur sigma 1.5": ("blur", 1.5),
    "JPEG quality 30": ("jpeg", 30),
}


def class_backgrounds(root: Path, split, *, per_class: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    """Median background colour of each class, from up to ``per_class`` training images."""
    from .images import load_image

    out = {}
    train = split[split["split"] == "train"]
    for label, g in train.groupby("label"):
        files = g["file"].sample(min(len(g), per_class), random_state=seed)
        out[label] = np.median([background_colour(load_image(Path(root) / f)) for f in files], 0)
    return out


def apply_shift(img: Image.Image, name: str, *, rng: np.random.Generator, target_colour=None) -> Image.Image:
    op, strength = SHIFTS[name]
    if op == "none":
        return img
    if op == "stain":
        return hed_jitter(img, strength, rng)
    if op == "background":
        return recolour_background(img, target_colour)
    if op == "scale":
        return rescale(img, strength)
    if op == "blur":
        return blur(img, strength)
    if op == "jpeg":
        return jpeg(img, strength)
    raise ValueError(f"unknown shift {name!r}")


def shift_eval(bundle_path: Path, root: Path, *, shifts=tuple(SHIFTS), max_images: int = 0, seed: int = 0,
               progress: bool = True) -> dict:
    """Metrics of the bundle on its test split re-rendered under each shift (same images, same threshold)."""
    from tqdm import tqdm

    from . import metrics as M
    from .images import load_image
    from .predict import Predictor

    p = Predictor(bundle_path)
    b = p.bundle
    pred = b.predictions()
    if max_images:
        pred = pred.sample(min(len(pred), max_images), random_state=seed)
    backgrounds = class_backgrounds(root, b.split(), seed=seed)
    farthest = {c: backgrounds[max(backgrounds, key=lambda o: float(np.abs(backgrounds[o] - backgrounds[c]).sum()))]
                for c in backgrounds}
    images = [load_image(Path(root) / f) for f in pred["file"]]
    y = pred["label"].map({c: i for i, c in enumerate(b.classes)}).to_numpy()
    ybin = np.isin(pred["label"], b.positive).astype(int)
    out = {}
    for name in tqdm(shifts, desc="shifts", disable=not progress):
        rng = np.random.default_rng(seed)
        shifted = [apply_shift(im, name, rng=rng, target_colour=farthest[label])
                   for im, label in zip(images, pred["label"], strict=True)]
        r = p.predict_batch(shifted)
        conf = M.confusion_at(ybin, r["suspicion"], b.threshold)
        out[name] = {"accuracy": float((r["probs"].argmax(1) == y).mean()),
                     "balanced_accuracy": M.balanced_accuracy(y, r["probs"].argmax(1)),
                     "roc_auc": M.roc_auc(ybin, r["suspicion"]) if 0 < ybin.sum() < len(ybin) else float("nan"),
                     "sensitivity": conf.sensitivity, "specificity": conf.specificity,
                     "ood_flag_rate": float(np.mean(r["ood_flag"]))}
    return {"images": int(len(pred)), "threshold": b.threshold, "seed": seed,
            "background_rule": "background recoloured to the median background of the class whose background is "
                               "farthest from the image's own class (train split)",
            "results": out}


def write_into_metrics(bundle_path: Path, key: str, value: dict) -> None:
    """Store ``value`` under ``key`` in the bundle's metrics.json and re-finalize the card."""
    import json

    from . import bundle as B

    b = B.load_bundle(bundle_path)
    metrics = json.loads((b.path / B.METRICS).read_text())
    metrics[key] = value
    B.write_json(b.path / B.METRICS, metrics)
    B.refinalize(b)


def balanced_accuracy_by_shift(bundles) -> pd.DataFrame:
    """Shifts (rows, in :data:`SHIFTS` order) x models (columns): balanced accuracy — the comparison page's and
    ``leukoview compare --section shift``'s table."""
    t = shift_table(bundles)
    if t.empty:
        return t
    wide = t.pivot(index="shift", columns="model", values="balanced_accuracy")
    return wide.reindex([s for s in SHIFTS if s in wide.index])


def shift_table(bundles) -> pd.DataFrame:
    rows = []
    for b in bundles:
        s = b.metrics.get("shift")
        if not s:
            continue
        for name, r in s["results"].items():
            rows.append({"model": b.id, "shift": name, **{k: r[k] for k in ("accuracy", "balanced_accuracy",
                                                                             "roc_auc", "sensitivity",
                                                                             "specificity", "ood_flag_rate")}})
    return pd.DataFrame(rows)
