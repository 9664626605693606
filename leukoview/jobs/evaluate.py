"""Predictions table -> the metrics written into every bundle's ``metrics.json``."""
from __future__ import annotations

import numpy as np
import pandas as pd

from leukoview.primitives import metrics


def predictions_frame(files, labels, probs: np.ndarray, classes: list[str], positive: list[str], *,
                      patients=None, groups=None, ood=None, sources=None) -> pd.DataFrame:
    """One row per image: file id, true class, per-class probabilities, suspicion (sum over positive classes)."""
    probs = np.asarray(probs, dtype=np.float64)  # float64 before rounding: the CSV then holds the same numbers
    df = pd.DataFrame({"file": list(files), "label": list(labels)})
    if patients is not None:
        df["patient"] = list(patients)
    if groups is not None:
        df["group"] = list(groups)
    if sources is not None:
        df["source"] = list(sources)
    for k, c in enumerate(classes):
        df[f"p_{c}"] = probs[:, k].round(6)
    df["predicted"] = [classes[i] for i in probs.argmax(1)]
    df["suspicion"] = probs[:, [classes.index(c) for c in positive]].sum(1).round(6)
    df["positive"] = df["label"].isin(positive).astype(int)
    if ood is not None:
        df["ood_score"] = np.round(ood, 4)
    return df


def probabilities(df: pd.DataFrame, classes: list[str]) -> np.ndarray:
    return df[[f"p_{c}" for c in classes]].to_numpy(dtype=np.float64)


def evaluate(df: pd.DataFrame, classes: list[str], positive: list[str], threshold: float, *, n_boot: int = 1000,
             seed: int = 0) -> dict:
    """All metrics of a predictions table at an operating threshold, with 95 % bootstrap intervals.

    Intervals resample patients when the table has patient ids, else duplicate groups (near-copies resampled
    together), else images.
    """
    probs = probabilities(df, classes)
    y_idx = df["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    if np.isnan(y_idx.astype(float)).any():
        raise ValueError(f"labels {sorted(set(df['label']) - set(classes))} are not among the classes {classes}")
    pred_idx = probs.argmax(1)
    y = df["positive"].to_numpy()
    s = df["suspicion"].to_numpy()
    conf = metrics.confusion_at(y, s, threshold)

    groups, unit = metrics.resampling_groups(df)

    def ci(stat):
        lo, hi = metrics.bootstrap_ci(stat, len(df), groups=groups, n_boot=n_boot, seed=seed)
        return [round(lo, 6), round(hi, 6)]

    def sens(idx):
        return metrics.confusion_at(y[idx], s[idx], threshold).sensitivity

    def spec(idx):
        return metrics.confusion_at(y[idx], s[idx], threshold).specificity

    def auc(idx):
        return metrics.roc_auc(y[idx], s[idx]) if 0 < y[idx].sum() < len(idx) else float("nan")

    out = {
        "n_images": int(len(df)),
        "n_positive": int(y.sum()),
        "n_patients": int(df["patient"].nunique()) if unit == "patient" else None,
        "accuracy": float(np.mean(pred_idx == y_idx)),
        "accuracy_ci95": ci(lambda i: float(np.mean(pred_idx[i] == y_idx[i]))),
        "balanced_accuracy": metrics.balanced_accuracy(y_idx, pred_idx),
        "per_class": metrics.per_class(y_idx, pred_idx, classes),
        "confusion_matrix": metrics.confusion_matrix(y_idx, pred_idx, len(classes)).tolist(),
        "roc_auc": metrics.roc_auc(y, s),
        "roc_auc_ci95": ci(auc),
        "pr_auc": metrics.average_precision(y, s),
        "threshold": float(threshold),
        "at_threshold": conf.as_dict(),
        "sensitivity_ci95": ci(sens),
        "specificity_ci95": ci(spec),
        "exact_ci95": {  # Clopper-Pearson, per image: informative even when no errors are made
            "accuracy": [round(v, 6) for v in metrics.exact_ci(int((pred_idx == y_idx).sum()), len(df))],
            "sensitivity": [round(v, 6) for v in metrics.exact_ci(conf.tp, conf.tp + conf.fn)],
            "specificity": [round(v, 6) for v in metrics.exact_ci(conf.tn, conf.tn + conf.fp)],
        },
        "brier_suspicion": metrics.brier(y, s),
        "brier_multiclass": metrics.multiclass_brier(y_idx, probs),
        "ece": metrics.top_label_ece(y_idx, probs),
        "ece_suspicion": metrics.binary_ece(y, s),
        "bootstrap": {"resamples": n_boot, "unit": unit, "level": 0.95, "method": "percentile"},
    }
    return out
