"""Everything the threshold explorer recomputes when the slider moves, from stored predictions only.

Scores are sorted once; each threshold is then a pair of ``searchsorted`` calls, so a slider move costs
microseconds even for 100k scores (no inference, no scikit-learn per move).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from leukoview.primitives import metrics as M

GRID_STEP = 0.0005  # the threshold slider's step: bootstrap intervals are precomputed on this grid


@dataclass(frozen=True)
class Point:
    threshold: float
    confusion: M.Confusion

    def __getattr__(self, name):  # sensitivity, specificity, ppv, … straight from the confusion
        return getattr(self.confusion, name)


class ThresholdAnalysis:
    """Operating points of a suspicion score against binary truth."""

    def __init__(self, y, scores, *, groups=None, unit: str = "", n_boot: int = 500, seed: int = 0):
        y, s = M._binary_inputs(y, scores)
        self.unit = unit or ("group" if groups is not None else "image")  # what the bootstrap resamples
        self.y, self.s = y, s
        self.pos = np.sort(s[y == 1])
        self.neg = np.sort(s[y == 0])
        self.P, self.N = len(self.pos), len(self.neg)
        self._roc = M.roc_curve(y, s)
        self._pr = M.pr_curve(y, s)
        self.roc_auc = M.roc_auc(y, s) if 0 < self.P < len(y) else float("nan")
        self.pr_auc = M.average_precision(y, s) if self.P else float("nan")
        # bootstrap resamples drawn once (by group when given): each threshold re-uses them
        self._boot_args = {"n": len(y), "groups": groups, "n_boot": n_boot, "seed": seed}
        # ... and reduced once to per-resample cumulative counts on the slider's grid, so the interval at a grid
        # threshold is one column lookup (exact: the same counts as re-scoring each resample)
        self._grid = np.round(np.arange(round(1 / GRID_STEP) + 1) * GRID_STEP, 10)
        bins = np.searchsorted(self._grid, s, side="right")  # scores below grid[k] <=> bin <= k
        g = len(self._grid) + 1
        self._below_pos = np.zeros((n_boot, g), np.int32)
        self._below_neg = np.zeros((n_boot, g), np.int32)
        for b, idx in enumerate(M.bootstrap_indices(**self._boot_args)):
            yb, jb = y[idx], bins[idx]
            self._below_pos[b] = np.cumsum(np.bincount(jb[yb == 1], minlength=g))
            self._below_neg[b] = np.cumsum(np.bincount(jb[yb == 0], minlength=g))

    def at(self, threshold: float) -> Point:
        """Confusion at ``threshold`` (positive when score >= threshold)."""
        fn = int(np.searchsorted(self.pos, threshold, side="left"))
        tn = int(np.searchsorted(self.neg, threshold, side="left"))
        return Point(float(threshold), M.Confusion(tp=self.P - fn, fp=self.N - tn, tn=tn, fn=fn))

    def curves(self) -> dict[str, np.ndarray]:
        fpr, tpr, roc_t = self._roc
        precision, recall, pr_t = self._pr
        return {"fpr": fpr, "tpr": tpr, "roc_thresholds": roc_t, "precision": precision, "recall": recall,
                "pr_thresholds": pr_t}

    def youden(self) -> float:
        """Threshold maximising sensitivity + specificity - 1 (highest such threshold on ties)."""
        fpr, tpr, thr = self._roc
        j = tpr - fpr
        k = int(np.flatnonzero(j == j.max())[0])
        return float(min(thr[k], 1.0))

    def highest_with_sensitivity(self, target: float = 0.95) -> float:
        """The highest threshold whose sensitivity is at least ``target`` (NaN without positives)."""
        if not self.P:
            return float("nan")
        k = int(np.floor((1 - target) * self.P + 1e-9))  # positives we may miss
        return float(self.pos[min(k, self.P - 1)])

    def presets(self, shipped: float) -> dict[str, float]:
        return {"0.5": 0.5, "shipped operating threshold": float(shipped), "Youden's J": self.youden(),
                "highest with sensitivity >= 95%": self.highest_with_sensitivity(0.95)}

    def bootstrap(self, threshold: float, level: float = 0.95) -> dict[str, tuple[float, float]]:
        """Percentile intervals of sensitivity and specificity at ``threshold`` over the stored resamples.

        On the slider's grid (multiples of ``GRID_STEP``) this reads the precomputed counts; elsewhere it
        re-scores every resample (same result, slower)."""
        k = int(round(threshold / GRID_STEP))
        if 0 <= k < len(self._grid) and self._grid[k] == threshold and len(self._below_pos):
            p, n = self._below_pos[:, -1], self._below_neg[:, -1]
            fn, tn = self._below_pos[:, k], self._below_neg[:, k]
            with np.errstate(invalid="ignore", divide="ignore"):
                sens = ((p - fn) / p)[p > 0].tolist()
                spec = (tn / n)[n > 0].tolist()
            return self._intervals(sens, spec, level)
        return self.bootstrap_rescored(threshold, level)

    def bootstrap_rescored(self, threshold: float, level: float = 0.95) -> dict[str, tuple[float, float]]:
        """:meth:`bootstrap` by re-scoring every resample at ``threshold`` (any threshold; the reference)."""
        sens, spec = [], []
        for idx in M.bootstrap_indices(**self._boot_args):
            y, flagged = self.y[idx], self.s[idx] >= threshold
            p = y.sum()
            if p:
                sens.append((flagged & (y == 1)).sum() / p)
            if len(y) - p:
                spec.append((~flagged & (y == 0)).sum() / (len(y) - p))
        return self._intervals(sens, spec, level)

    @staticmethod
    def _intervals(sens: list, spec: list, level: float) -> dict[str, tuple[float, float]]:
        a = (1 - level) / 2

        def q(v):
            return (float(np.quantile(v, a)), float(np.quantile(v, 1 - a))) if v else (float("nan"),) * 2

        return {"sensitivity": q(sens), "specificity": q(spec)}

    def histogram(self, bins: int = 40) -> dict[str, np.ndarray]:
        edges = np.linspace(0, 1, bins + 1)
        return {"edges": edges, "positive": np.histogram(self.pos, edges)[0],
                "negative": np.histogram(self.neg, edges)[0]}


def natural_frequencies(point: Point, prevalence: float, *, per: int = 1000) -> dict[str, float]:
    """Of ``per`` people screened at ``prevalence``: how many with disease are caught / missed, how many
    healthy people are flagged / cleared (expected counts from the point's sensitivity and specificity)."""
    diseased = per * prevalence
    healthy = per - diseased
    sens = 0.0 if np.isnan(point.sensitivity) else point.sensitivity
    spec = 0.0 if np.isnan(point.specificity) else point.specificity
    return {"per": per, "diseased": diseased, "caught": diseased * sens, "missed": diseased * (1 - sens),
            "healthy": healthy, "false_alarms": healthy * (1 - spec), "cleared": healthy * spec}


def _population(unit: str, per: int) -> tuple[str, str]:
    """What a natural frequency counts: people only when the test split's unit is the patient; otherwise images
    (one field or one cell each), since a per-image sensitivity is not a per-person one."""
    if unit == "patient":
        return f"{per:,} people screened", "people"
    return f"{per:,} images scored", "images"


def describe(point: Point, prevalence: float, *, per: int = 1000, positive_name: str = "leukemia",
             unit: str = "image") -> str:
    f = natural_frequencies(point, prevalence, per=per)
    group, _ = _population(unit, per)
    return (f"Of {group} where {prevalence:.1%} show {positive_name}: about "
            f"{f['caught']:.0f} of the {f['diseased']:.0f} with {positive_name} are caught and {f['missed']:.0f} "
            f"missed; {f['false_alarms']:.0f} of the {f['healthy']:.0f} without it are flagged for review.")


def compare(a: Point, b: Point, prevalence: float, *, per: int = 1000, unit: str = "image") -> str:
    """The trade from threshold ``b`` (reference) to ``a``, in natural frequencies."""
    fa, fb = natural_frequencies(a, prevalence, per=per), natural_frequencies(b, prevalence, per=per)
    dc, df = fa["caught"] - fb["caught"], fa["false_alarms"] - fb["false_alarms"]
    group, _ = _population(unit, per)
    return (f"Moving the threshold from {b.threshold:.3g} to {a.threshold:.3g}: {dc:+.1f} cases caught and "
            f"{df:+.1f} false alarms per {group}.")


def score_overlap(y, scores) -> float:
    """Share of the test images whose score lies where positives and negatives overlap (between the lowest
    positive and the highest negative score): 0 for a model that separates them perfectly, whose trade-off then
    hardly moves with the threshold."""
    y, s = np.asarray(y), np.asarray(scores, float)
    pos, neg = s[y == 1], s[y == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    lo, hi = pos.min(), neg.max()
    return float(((s >= lo) & (s <= hi)).mean()) if lo <= hi else 0.0


def teaching_choices(overlaps: dict[str, tuple[float, float]], *, k: int = 3, at_least: float = 0.05,
                     min_auc: float = 0.9) -> list[tuple[str, float]]:
    """The bundles whose threshold trade-off is visible: ``overlaps`` maps a bundle to (score overlap, ROC-AUC);
    the largest overlap first, at least ``at_least``, among models still good enough to teach with (ROC-AUC at
    least ``min_auc``: a model that cannot rank the cases teaches nothing about a threshold)."""
    ranked = sorted(((b, o) for b, (o, auc) in overlaps.items() if o == o and o >= at_least and auc >= min_auc),
                    key=lambda x: -x[1])
    return ranked[:k]
