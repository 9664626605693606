"""The shift test: a bundle's test split re-rendered under controlled acquisition shifts (stain, background of
another class, zoom, blur, JPEG), each scored with the same threshold, so a reader sees what each shift costs.

``python -m leukoview shift BUNDLE`` evaluates every shift of :data:`SHIFTS` and stores the result in the bundle's
``metrics.json`` (key ``shift``) through :func:`leukoview.models.bundle.update`; the comparison page shows it
(:func:`leukoview.app.compare.balanced_accuracy_by_shift`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from leukoview.primitives import metrics
from leukoview.primitives.augment import (
    background_only,
    blur,
    hed_jitter,
    jpeg,
    recolour_background,
    replace_background,
    rescale,
)
from leukoview.primitives.images import load_image
from leukoview.primitives.segment import background_colour

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
    "background removed (black)": ("remove", 0),
    "background removed (white)": ("remove", 255),
    "background of another image": ("swap", 0),
}


def class_backgrounds(root: Path, split, *, per_class: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    """Median background colour of each class, from up to ``per_class`` training images."""
    out = {}
    train = split[split["split"] == "train"]
    for label, g in train.groupby("label"):
        files = g["file"].sample(min(len(g), per_class), random_state=seed)
        out[label] = np.median([background_colour(load_image(Path(root) / f)) for f in files], 0)
    return out


def apply_shift(img: Image.Image, name: str, *, rng: np.random.Generator, target_colour=None,
                other: Image.Image | None = None) -> Image.Image:
    """``img`` under the shift ``name``; ``other`` is the image whose background "background of another image"
    puts behind this one's cells (the previous test image of another class)."""
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
    if op == "remove":  # the cells kept by this project's own segmentation, the rest black or white
        return replace_background(img, np.full(3, float(strength)))
    if op == "swap":
        if other is None:
            return img
        return replace_background(img, background_only(other.convert("RGB").resize(img.size)))
    raise ValueError(f"unknown shift {name!r}")


def _other_class_image(images: list, labels: list, k: int):
    """The nearest following test image of another class (wrapping round): its background goes behind image k."""
    for step in range(1, len(images)):
        j = (k + step) % len(images)
        if labels[j] != labels[k]:
            return images[j]
    return None


def shift_eval(bundle_path: Path, root: Path, *, shifts=tuple(SHIFTS), max_images: int = 0, seed: int = 0,
               split: str = "test", progress: bool = True) -> dict:
    """Metrics of the bundle on its test split re-rendered under each shift (same images, same threshold).
    ``split="val"``: the validation split instead, for choosing between recipes without looking at the test split."""
    from leukoview.jobs.predict import Predictor  # torch loads here, not when the comparison page reads SHIFTS

    if split not in ("test", "val"):
        raise ValueError(f"split must be test or val, not {split!r}")
    unknown = [s for s in shifts if s not in SHIFTS]
    if unknown:
        raise ValueError(f"unknown shift(s) {', '.join(unknown)}; known: {', '.join(SHIFTS)}")
    p = Predictor(bundle_path)
    b = p.bundle
    pred = b.predictions(split)
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
        labels = pred["label"].tolist()
        others = [_other_class_image(images, labels, k) for k in range(len(images))]
        shifted = [apply_shift(im, name, rng=rng, target_colour=farthest[label], other=other)
                   for im, label, other in zip(images, labels, others, strict=True)]
        r = p.predict_batch(shifted)
        conf = metrics.confusion_at(ybin, r["suspicion"], b.threshold)
        out[name] = {"accuracy": float((r["probs"].argmax(1) == y).mean()),
                     "balanced_accuracy": metrics.balanced_accuracy(y, r["probs"].argmax(1)),
                     "roc_auc": metrics.roc_auc(ybin, r["suspicion"]) if 0 < ybin.sum() < len(ybin) else float("nan"),
                     "sensitivity": conf.sensitivity, "specificity": conf.specificity,
                     "ood_flag_rate": float(np.mean(r["ood_flag"]))}
    return {"images": int(len(pred)), "split": split, "threshold": b.threshold, "seed": seed,
            "background_rule": "background recoloured to the median background of the class whose background is "
                               "farthest from the image's own class (train split)",
            "results": out}


def store(bundle_path: Path, result: dict, *, partial: bool) -> dict:
    """Write a shift test into its bundle (test split: key ``shift``; validation: ``shift_val``). A ``partial`` run
    (some shifts only) on the same images and threshold keeps the other shifts' stored results. Returns what was
    stored."""
    from leukoview import audits
    from leukoview.models import bundle

    audit = audits.SHIFT if result["split"] == "test" else audits.SHIFT_VAL
    before = audits.result(bundle.load_bundle(bundle_path, verify=False), audit)
    if partial and before and (before["images"], before["threshold"]) == (result["images"], result["threshold"]):
        result = {**before, "results": {**before["results"], **result["results"]}}
    audits.store(bundle_path, audit, result)
    return result


def run(bundle_path: Path, root: Path | None = None, *, shifts=None, max_images: int = 0, split: str = "test",
        progress: bool = True) -> dict:
    """The audit's one entry: re-render the split under ``shifts`` (default all), store the result in the bundle
    (a partial run keeps the other shifts' stored results) and return what was stored."""
    from leukoview.primitives import settings

    r = shift_eval(Path(bundle_path), Path(root) if root else settings.data_root(), shifts=tuple(shifts or SHIFTS),
                   max_images=max_images, split=split, progress=progress)
    return store(Path(bundle_path), r, partial=bool(shifts))
