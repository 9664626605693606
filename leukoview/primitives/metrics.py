"""Pure metric functions on numpy arrays: threshold counts, ROC/PR, calibration, bootstrap intervals.

Conventions: data arguments positional, options keyword-only; ``y`` is 0/1 (1 = clinically positive) and
``scores`` the suspicion score in [0, 1]. Degenerate input (one class only) warns and gives NaN rather than
raising, so a page can still show the rest.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


def _binary_inputs(y, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"y and scores must be 1-D of the same length, got shapes {y.shape} and {s.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"y must hold only 0 and 1, got values {np.unique(y)[:5]}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return y.astype(np.int64), s


def _single_class(y: np.ndarray, what: str) -> bool:
    if y.min(initial=1) == y.max(initial=0):
        warnings.warn(f"{what} is undefined with only one class present; returning NaN", RuntimeWarning,
                      stacklevel=3)
        return True
    return False


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


@dataclass(frozen=True)
class Confusion:
    """Binary confusion counts at one threshold (positive = score >= threshold) and the rates they give."""

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def sensitivity(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float:
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def ppv(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def npv(self) -> float:
        return _ratio(self.tn, self.tn + self.fn)

    @property
    def accuracy(self) -> float:
        return _ratio(self.tp + self.tn, self.tp + self.tn + self.fp + self.fn)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("tp", "fp", "tn", "fn")}
        out.update({k: getattr(self, k) for k in ("sensitivity", "specificity", "ppv", "npv", "accuracy", "f1")})
        return out


def confusion_at(y, scores, threshold: float) -> Confusion:
    y, s = _binary_inputs(y, scores)
    pred = s >= threshold
    return Confusion(tp=int((pred & (y == 1)).sum()), fp=int((pred & (y == 0)).sum()),
                     tn=int((~pred & (y == 0)).sum()), fn=int((~pred & (y == 1)).sum()))


def predictive_values(sensitivity: float, specificity: float, prevalence: float) -> tuple[float, float]:
    """PPV and NPV for a population of the given prevalence (Bayes), from sensitivity and specificity."""
    if not 0 <= prevalence <= 1:
        raise ValueError(f"prevalence must be in [0, 1], got {prevalence}")
    tp, fn = sensitivity * prevalence, (1 - sensitivity) * prevalence
    tn, fp = specificity * (1 - prevalence), (1 - specificity) * (1 - prevalence)
    return _ratio(tp, tp + fp), _ratio(tn, tn + fn)


def roc_curve(y, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rate, true-positive rate and thresholds, thresholds decreasing from +inf (a point (0, 0))."""
    y, s = _binary_inputs(y, scores)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    P, N = y.sum(), len(y) - y.sum()
    tpr = np.r_[0, tps] / P if P else np.full(len(tps) + 1, np.nan)
    fpr = np.r_[0, fps] / N if N else np.full(len(fps) + 1, np.nan)
    return fpr, tpr, np.r_[np.inf, s[last_of_tie]]


def pr_curve(y, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and thresholds (decreasing); precision and recall have one more element, the end point
    (recall 0, precision 1), as in scikit-learn but in threshold-decreasing order."""
    y, s = _binary_inputs(y, scores)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y)[last_of_tie]
    predicted = last_of_tie + 1
    P = y.sum()
    precision = tps / predicted
    recall = tps / P if P else np.full(len(tps), np.nan)
    return np.r_[1.0, precision], np.r_[0.0, recall], s[last_of_tie]


def roc_auc(y, scores) -> float:
    """Area under the ROC curve (the probability a positive outranks a negative; ties count one half)."""
    y, s = _binary_inputs(y, scores)
    if _single_class(y, "ROC-AUC"):
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(s)
    P = y.sum()
    N = len(y) - P
    return float((ranks[y == 1].sum() - P * (P + 1) / 2) / (P * N))


def average_precision(y, scores) -> float:
    """Area under the PR curve as the step sum  sum_k (R_k - R_{k-1}) P_k  (scikit-learn's definition)."""
    y, s = _binary_inputs(y, scores)
    if y.sum() == 0:
        _single_class(np.zeros(1), "PR-AUC")
        return float("nan")
    precision, recall, _ = pr_curve(y, s)
    return float(np.sum(np.diff(recall) * precision[1:]))


def brier(y, scores) -> float:
    """Mean squared error of the positive-class probability."""
    y, s = _binary_inputs(y, scores)
    return float(np.mean((s - y) ** 2))


def multiclass_brier(y_index, probs) -> float:
    """Mean over images of the squared distance between the probability vector and the one-hot truth."""
    probs = np.asarray(probs, dtype=np.float64)
    onehot = np.eye(probs.shape[1])[np.asarray(y_index)]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def calibration_bins(confidence, correct, *, n_bins: int = 15) -> list[dict]:
    """Equal-width reliability bins: mean confidence, accuracy and count of each non-empty bin."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        m = idx == b
        if m.any():
            out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "confidence": float(confidence[m].mean()),
                        "accuracy": float(correct[m].mean()), "count": int(m.sum())})
    return out


def expected_calibration_error(confidence, correct, *, n_bins: int = 15) -> float:
    """ECE: count-weighted mean |accuracy - confidence| over equal-width bins."""
    bins = calibration_bins(confidence, correct, n_bins=n_bins)
    n = sum(b["count"] for b in bins)
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins) / n) if n else float("nan")


def top_label_ece(y_index, probs, *, n_bins: int = 15) -> float:
    """Multi-class ECE on the predicted class's probability (Guo et al. 2017)."""
    probs = np.asarray(probs)
    return expected_calibration_error(probs.max(1), probs.argmax(1) == np.asarray(y_index), n_bins=n_bins)


def binary_ece(y, scores, *, n_bins: int = 15) -> float:
    """ECE of the suspicion score as a probability of the positive class (reliability of the score itself)."""
    y, s = _binary_inputs(y, scores)
    bins = calibration_bins(s, y, n_bins=n_bins)
    n = sum(b["count"] for b in bins)
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins) / n)


def per_class(y_index, pred_index, classes) -> list[dict]:
    """Precision, recall and support of each class."""
    y_index, pred_index = np.asarray(y_index), np.asarray(pred_index)
    rows = []
    for k, name in enumerate(classes):
        tp = int(((pred_index == k) & (y_index == k)).sum())
        rows.append({"class": name, "precision": _ratio(tp, (pred_index == k).sum()),
                     "recall": _ratio(tp, (y_index == k).sum()), "support": int((y_index == k).sum())})
    return rows


def balanced_accuracy(y_index, pred_index) -> float:
    """Mean recall over the classes present in ``y_index``."""
    y_index, pred_index = np.asarray(y_index), np.asarray(pred_index)
    recalls = [np.mean(pred_index[y_index == k] == k) for k in np.unique(y_index)]
    return float(np.mean(recalls))


def confusion_matrix(y_index, pred_index, n_classes: int) -> np.ndarray:
    """Rows = true class, columns = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_index), np.asarray(pred_index)), 1)
    return cm


def exact_ci(successes: int, n: int, *, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson interval of a proportion. Unlike a bootstrap it stays informative at 0 or n successes
    (with 0 errors in n, the upper error bound is about 3/n)."""
    from scipy.stats import beta

    if n == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    lo = 0.0 if successes == 0 else float(beta.ppf(a, successes, n - successes + 1))
    hi = 1.0 if successes == n else float(beta.ppf(1 - a, successes + 1, n - successes))
    return lo, hi


def bootstrap_indices(n: int, *, groups=None, n_boot: int = 1000, seed: int = 0):
    """Yield ``n_boot`` bootstrap resamples of item indices 0..n-1; with ``groups`` whole groups are drawn."""
    rng = np.random.default_rng(seed)
    if groups is None:
        for _ in range(n_boot):
            yield rng.integers(0, n, n)
        return
    # items ordered by group (ascending index inside each); a resample is the drawn groups' runs, concatenated
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for _ in range(n_boot):
        draw = rng.integers(0, len(sizes), len(sizes))
        lengths = sizes[draw]
        ends = np.cumsum(lengths)
        offsets = np.arange(ends[-1]) - np.repeat(ends - lengths, lengths)
        yield order[np.repeat(starts[draw], lengths) + offsets]


def bootstrap_ci(statistic, n: int, *, groups=None, n_boot: int = 1000, seed: int = 0, level: float = 0.95
                 ) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(indices)`` over ``n`` items.

    With ``groups`` (one label per item, e.g. patient) whole groups are resampled, so correlated cells of one
    patient do not narrow the interval. Resamples where the statistic is NaN (e.g. one class drawn) are dropped.
    """
    values = []
    for idx in bootstrap_indices(n, groups=groups, n_boot=n_boot, seed=seed):
        v = statistic(idx)
        if not np.isnan(v):
            values.append(v)
    if not values:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def choose_threshold(y, scores, *, min_specificity: float = 0.98) -> dict:
    """The sensitivity-first operating threshold, chosen on validation predictions.

    1. The specificity floor: with N negatives at most k = floor((1 - min_specificity) * N) may be flagged, so
       the threshold must lie above ``lower``, the (k+1)-th highest negative score; every threshold above it
       keeps specificity >= the floor.
    2. Sensitivity first: the highest sensitivity reachable there is the share of positives scoring above
       ``lower``; ``upper``, the lowest of those positive scores, is the highest threshold that still reaches it.
    3. Any threshold in (lower, upper] gives that validation operating point; the logit midpoint is taken, so the
       threshold sits below the positives with a margin, spending the specificity budget only as margin
       rather than flagging negatives for no gain in sensitivity.
    """
    y, s = _binary_inputs(y, scores)
    if _single_class(y, "threshold choice"):
        return {"threshold": 0.5, "rule": "default 0.5: validation has a single class"}
    if not 0 <= min_specificity <= 1:
        raise ValueError(f"min_specificity must be in [0, 1], got {min_specificity}")
    neg = np.sort(s[y == 0])[::-1]
    k = int(np.floor((1 - min_specificity) * len(neg) + 1e-9))
    lower = float(neg[k]) if k < len(neg) else 0.0
    reachable = s[(y == 1) & (s > lower)]
    if len(reachable):
        upper = float(reachable.min())
    else:  # no positive can be flagged under the floor: just clear ``lower``
        above = s[s > lower]
        upper = float(above.min()) if len(above) else 1.0
    eps = 1e-6

    def logit(p):
        p = min(max(p, eps), 1 - eps)
        return np.log(p / (1 - p))

    mid = float(1 / (1 + np.exp(-(logit(lower) + logit(upper)) / 2)))
    threshold = min(max(mid, float(np.nextafter(lower, 1.0))), upper)
    c = confusion_at(y, s, threshold)
    return {"threshold": threshold, "val_sensitivity": c.sensitivity, "val_specificity": c.specificity,
            "rule": (f"sensitivity-first on validation: the highest sensitivity reachable with specificity >= "
                     f"{min_specificity:g} (at most {k} of {len(neg)} validation negatives flagged); the threshold "
                     "is the logit midpoint between the lowest threshold that floor allows and the highest one that "
                     "still reaches that sensitivity")}


def mcnemar(correct_a, correct_b) -> dict:
    """Exact McNemar test on paired per-image correctness of two models: do they err on different images more
    often than chance would give? Returns the four counts and the two-sided p-value (1 when they never
    disagree)."""
    from scipy.stats import binomtest

    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape:
        raise ValueError(f"paired correctness needs equal lengths, got {a.shape} and {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    return {"images": int(len(a)), "both_right": int((a & b).sum()), "both_wrong": int((~a & ~b).sum()),
            "only_a_right": only_a, "only_b_right": only_b,
            "p_value": float(binomtest(only_a, n, 0.5).pvalue) if n else 1.0}


def resampling_groups(df) -> tuple[np.ndarray | None, str]:
    """The bootstrap unit of a predictions table: patients when every row has one, else duplicate groups (near
    copies resampled together), else single images. Returns (group labels or None, unit name)."""
    if "patient" in df and (df["patient"].astype(str) != "").all():
        return df["patient"].astype(str).to_numpy(), "patient"
    if "group" in df:
        return df["group"].to_numpy(), "duplicate group"
    return None, "image"
