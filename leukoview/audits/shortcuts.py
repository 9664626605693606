"""Shortcut audit: how far do non-cell cues alone go?

A trivial classifier sees only what a scanner or a file format leaves behind — image size, JPEG quantisation and
bytes per pixel, the colour of the image border, of the four corners and of the bright background — never the
cell. It is fitted on a bundle's train split and scored on its test split. If it does nearly as well as the real
model, the dataset lets a network score by recognising the acquisition, and the model's figures say little about
the next lab's slides.

``python -m leukoview shortcuts BUNDLE…`` stores the audit in the bundle (``metrics.json["shortcuts"]``, through
:mod:`leukoview.audits`); Home and the comparison page find each task's (:func:`by_task`).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from leukoview import audits
from leukoview.primitives import metrics
from leukoview.primitives.images import load_image

if TYPE_CHECKING:  # Home reads the audit file without pandas
    import pandas as pd


CUE_GROUPS = {
    "image size": ["width", "height", "aspect"],
    "file / JPEG": ["jpeg_quality_table", "is_jpeg"],
    "border colour": [f"border_{s}_{c}" for s in ("mean", "std") for c in "rgb"],
    "corners": [f"corner{k}_{c}" for k in range(4) for c in "rgb"],
    "background colour": [f"background_{c}" for c in "rgb"],
}


def cue_features(path: Path) -> dict[str, float]:
    """The non-cell cues of one image file."""
    from PIL import Image

    path = Path(path)
    with Image.open(path) as im:
        w, h = im.size
        is_jpeg = im.format == "JPEG"
        tables = getattr(im, "quantization", None) or {}
        q = float(np.mean(tables[0])) if is_jpeg and 0 in tables else 0.0
    arr = np.asarray(load_image(path), np.float32)
    b = max(2, min(h, w) // 28)  # 8 px on a 224 image
    strip = np.concatenate([arr[:b].reshape(-1, 3), arr[-b:].reshape(-1, 3), arr[:, :b].reshape(-1, 3),
                            arr[:, -b:].reshape(-1, 3)])
    c = max(4, min(h, w) // 9)
    corners = [arr[:c, :c], arr[:c, -c:], arr[-c:, :c], arr[-c:, -c:]]
    gray = arr.mean(2)
    bright = arr[gray >= np.quantile(gray, 0.7)]
    out = {"width": float(w), "height": float(h), "aspect": w / h,
           "jpeg_quality_table": q, "is_jpeg": float(is_jpeg)}
    for name, v in (("mean", strip.mean(0)), ("std", strip.std(0))):
        out.update({f"border_{name}_{ch}": float(x) for ch, x in zip("rgb", v, strict=True)})
    for k, patch in enumerate(corners):
        out.update({f"corner{k}_{ch}": float(x) for ch, x in zip("rgb", patch.reshape(-1, 3).mean(0), strict=True)})
    out.update({f"background_{ch}": float(x) for ch, x in zip("rgb", np.median(bright, 0), strict=True)})
    return out


def cue_table(root: Path, files: list[str], *, progress: bool = False) -> pd.DataFrame:
    import pandas as pd
    from tqdm import tqdm

    rows = [cue_features(Path(root) / f) for f in tqdm(files, desc="cues", unit="img", disable=not progress)]
    return pd.DataFrame(rows, index=files)


def _fit_score(x_train, y_train, x_test, y_test, positive_index: list[int]) -> dict:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best = None
    for name, est in (("logistic regression", make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))),
                      ("gradient-boosted trees", HistGradientBoostingClassifier(max_depth=3, max_iter=100,
                                                                                random_state=0))):
        est.fit(x_train, y_train)
        probs = est.predict_proba(x_test)
        full = np.zeros((len(x_test), int(max(y_train.max(), y_test.max())) + 1))
        full[:, est.classes_] = probs
        pred = full.argmax(1)
        ybin = np.isin(y_test, positive_index).astype(int)
        r = {"classifier": name, "accuracy": float((pred == y_test).mean()),
             "balanced_accuracy": metrics.balanced_accuracy(y_test, pred),
             "positive_roc_auc": metrics.roc_auc(ybin, full[:, positive_index].sum(1)) if 0 < ybin.sum() < len(ybin)
             else float("nan")}
        if best is None or r["balanced_accuracy"] > best["balanced_accuracy"]:
            best = r
    return best


def level_of(balanced_accuracy: float, n_classes: int, positive_auc: float = float("nan")) -> str:
    """"high" when non-cell cues close 60% of the gap from chance to perfect — in telling the classes apart or in
    ranking the clinically positive class (the suspicion score) — "moderate" from 30%, else "low"."""
    chance = 1 / n_classes
    gain = (balanced_accuracy - chance) / (1 - chance)
    if not np.isnan(positive_auc):
        gain = max(gain, (positive_auc - 0.5) / 0.5)
    return "high" if gain >= 0.6 else "moderate" if gain >= 0.3 else "low"


def audit(bundle, root: Path, *, progress: bool = False) -> dict:
    """The shortcut audit on a bundle's own split (train -> test) of its dataset under ``root``."""
    split = bundle.split()
    classes = bundle.classes
    index = {c: i for i, c in enumerate(classes)}
    table = cue_table(root, split["file"].tolist(), progress=progress)
    y = split["label"].map(index).to_numpy()
    train, test = (split["split"] == "train").to_numpy(), (split["split"] == "test").to_numpy()
    pos = [index[c] for c in bundle.positive]
    groups = {}
    for name, cols in {**CUE_GROUPS, "all cues": [c for g in CUE_GROUPS.values() for c in g]}.items():
        x = table[cols].to_numpy(np.float64)
        groups[name] = _fit_score(x[train], y[train], x[test], y[test], pos)
    overall = groups["all cues"]
    strongest = max(CUE_GROUPS, key=lambda g: groups[g]["balanced_accuracy"])
    level = level_of(overall["balanced_accuracy"], len(classes), overall["positive_roc_auc"])
    return {"task": bundle.task, "split_hash": bundle.card.split_hash, "bundle": bundle.id,
            "classes": classes, "n_train": int(train.sum()), "n_test": int(test.sum()), "chance": 1 / len(classes),
            "groups": groups, "strongest_group": strongest, "level": level,
            "model_balanced_accuracy": bundle.metrics["balanced_accuracy"],
            "message": message(overall, strongest, groups[strongest]["balanced_accuracy"], level,
                               bundle.metrics["balanced_accuracy"], bundle.positive)}


def message(overall: dict, strongest: str, strongest_bal: float, level: str, model_bal: float,
            positive: list[str]) -> str:
    text = (f"Non-cell cues alone (image size, JPEG tables, border, corner and background colour) reach balanced "
            f"accuracy {overall['balanced_accuracy']:.3f} on the test split (strongest single cue: {strongest}, "
            f"{strongest_bal:.3f}; the model: {model_bal:.3f}) and rank {', '.join(positive)} against the rest with "
            f"ROC-AUC {overall['positive_roc_auc']:.3f}.")
    if level == "high":
        text += (" Shortcut risk HIGH: classes can be told apart by how the images were acquired, so the model's "
                 "figures may not carry over to another lab's slides; check its Grad-CAM maps and shift tests.")
    elif level == "moderate":
        text += " Shortcut risk moderate: acquisition cues carry real class information here."
    return text


def write(bundle_path: Path, result: dict) -> None:
    """Store the audit in the bundle it was run against (``metrics.json["shortcuts"]``)."""
    audits.store(bundle_path, audits.SHORTCUTS, result)


def by_task(bundles) -> dict:
    """Every task's shortcut audit, from the bundles that carry one (the first bundle of a task that has it)."""
    out: dict = {}
    for b in bundles:
        r = audits.result(b, audits.SHORTCUTS)
        if r and r.get("task", b.task) not in out:
            out[r.get("task", b.task)] = r
    return out


def run(bundle_path: Path, root: Path | None = None, *, progress: bool = True) -> dict:
    """The audit's one entry: :func:`audit` on the bundle's own split, stored in it (``metrics.json[shortcuts]``)."""
    from leukoview.models.bundle import load_bundle
    from leukoview.primitives import settings

    r = audit(load_bundle(bundle_path), Path(root) if root else settings.data_root(), progress=progress)
    write(bundle_path, r)
    return r
