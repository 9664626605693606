import numpy as np
import pytest
from sklearn import metrics as skm

from leukoview.primitives import metrics as M

Y = np.array([0, 0, 1, 1, 0, 1, 1, 0])
S = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.6, 0.7])


def test_confusion_at_hand_checked():
    c = M.confusion_at(Y, S, 0.5)
    # scores >= 0.5: 0.8(1) 0.9(1) 0.6(1) 0.7(0) -> tp 3, fp 1; below: 0.1 0.4 0.2 (0) and 0.35 (1) -> tn 3, fn 1
    assert (c.tp, c.fp, c.tn, c.fn) == (3, 1, 3, 1)
    assert c.sensitivity == 0.75 and c.specificity == 0.75 and c.ppv == 0.75 and c.npv == 0.75
    assert c.f1 == pytest.approx(0.75) and c.accuracy == 0.75


def test_confusion_threshold_is_inclusive():
    assert M.confusion_at([1], [0.5], 0.5).tp == 1


def test_roc_auc_hand_checked_and_matches_sklearn():
    # positives 0.35 0.8 0.9 0.6 vs negatives 0.1 0.4 0.2 0.7: 13 of 16 pairs ordered correctly
    assert M.roc_auc(Y, S) == pytest.approx(13 / 16)
    assert M.roc_auc(Y, S) == pytest.approx(skm.roc_auc_score(Y, S))


def test_roc_auc_ties_count_half():
    assert M.roc_auc([0, 1], [0.5, 0.5]) == 0.5


def test_roc_curve_matches_sklearn():
    fpr, tpr, thr = M.roc_curve(Y, S)
    sf, st, sthr = skm.roc_curve(Y, S, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sf)
    np.testing.assert_allclose(tpr, st)
    assert thr[0] == np.inf and np.all(np.diff(thr[1:]) < 0)


def test_average_precision_matches_sklearn():
    assert M.average_precision(Y, S) == pytest.approx(skm.average_precision_score(Y, S))
    p, r, t = M.pr_curve(Y, S)
    assert len(p) == len(r) == len(t) + 1


def test_single_class_gives_nan_with_warning():
    with pytest.warns(RuntimeWarning, match="only one class"):
        assert np.isnan(M.roc_auc([1, 1], [0.2, 0.3]))


def test_bad_inputs_are_refused_with_a_message():
    with pytest.raises(ValueError, match="same length"):
        M.confusion_at([0, 1], [0.1], 0.5)
    with pytest.raises(ValueError, match="only 0 and 1"):
        M.roc_auc([0, 2], [0.1, 0.2])


def test_brier_and_multiclass_brier_hand_checked():
    assert M.brier([1, 0], [0.8, 0.4]) == pytest.approx((0.04 + 0.16) / 2)
    assert M.multiclass_brier([0, 2], [[0.5, 0.5, 0], [0, 0, 1]]) == pytest.approx(0.25)


def test_ece_hand_checked():
    # two bins: conf 0.9 (4 items, 3 right -> 0.75) and conf 0.6 (2 items, both right -> 1.0)
    conf = [0.9, 0.9, 0.9, 0.9, 0.6, 0.6]
    correct = [1, 1, 1, 0, 1, 1]
    assert M.expected_calibration_error(conf, correct, n_bins=10) == pytest.approx((4 * 0.15 + 2 * 0.4) / 6)
    assert M.top_label_ece([0, 1], [[0.9, 0.1], [0.2, 0.8]], n_bins=10) == pytest.approx(0.15)


def test_balanced_accuracy_and_per_class():
    y = [0, 0, 0, 1]
    p = [0, 0, 1, 1]
    assert M.balanced_accuracy(y, p) == pytest.approx((2 / 3 + 1) / 2)
    rows = M.per_class(y, p, ["a", "b"])
    assert rows[1] == {"class": "b", "precision": 0.5, "recall": 1.0, "support": 1}
    assert M.confusion_matrix(y, p, 2).tolist() == [[2, 1], [0, 1]]


def test_predictive_values_at_prevalence():
    ppv, npv = M.predictive_values(0.9, 0.9, 0.1)
    assert ppv == pytest.approx(0.09 / (0.09 + 0.09)) and npv == pytest.approx(0.81 / (0.81 + 0.01))


def test_bootstrap_ci_by_group_is_wider_than_by_item():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(10), 20)
    values = np.repeat(rng.normal(0, 1, 10), 20)  # everything varies between groups only
    stat = lambda idx: float(values[idx].mean())
    lo_i, hi_i = M.bootstrap_ci(stat, len(values), n_boot=300)
    lo_g, hi_g = M.bootstrap_ci(stat, len(values), groups=groups, n_boot=300)
    assert hi_g - lo_g > 2 * (hi_i - lo_i)
    assert lo_g < values.mean() < hi_g


def test_choose_threshold_is_the_lowest_keeping_the_specificity_floor():
    y = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    s = np.array([0.01, 0.02, 0.03, 0.05, 0.1, 0.1, 0.2, 0.25, 0.3, 0.6, 0.4, 0.9, 0.95])
    out = M.choose_threshold(y, s, min_specificity=0.9)
    # 10 negatives, floor 0.9: one may be flagged (0.6), so the threshold must clear the next one, 0.3; the next
    # higher score is the positive at 0.4: the logit midpoint of 0.3 and 0.4
    mid = 1 / (1 + np.exp(-(np.log(0.3 / 0.7) + np.log(0.4 / 0.6)) / 2))
    assert out["threshold"] == pytest.approx(mid) and 0.3 < out["threshold"] < 0.4
    assert out["val_sensitivity"] == 1.0 and out["val_specificity"] == 0.9
    strict = M.choose_threshold(y, s, min_specificity=1.0)
    # no negative may be flagged: above 0.6, below the next score 0.9 -> sensitivity 2/3
    assert strict["val_sensitivity"] == pytest.approx(2 / 3) and 0.6 < strict["threshold"] < 0.9
    assert strict["val_specificity"] == 1.0


def test_choose_threshold_never_flags_more_negatives_than_allowed():
    rng = np.random.default_rng(1)
    for _ in range(50):
        y = rng.integers(0, 2, 60)
        if y.min() == y.max():
            continue
        s = rng.uniform(0, 0.99, 60).round(2)  # ties included
        for floor in (0.8, 0.95, 0.98):
            out = M.choose_threshold(y, s, min_specificity=floor)
            assert out["val_specificity"] >= floor
            # no threshold that keeps the floor reaches a higher sensitivity
            for c in np.unique(s):
                point = M.confusion_at(y, s, c)
                if point.specificity >= floor:
                    assert point.sensitivity <= out["val_sensitivity"]


def test_choose_threshold_does_not_spend_specificity_for_nothing():
    # perfectly separated: the floor would allow flagging one negative, but that buys no sensitivity, so the
    # threshold stays between the top negative region and the positives and flags no negative
    y = np.array([0] * 50 + [1] * 10)
    s = np.r_[np.linspace(0.001, 0.2, 50), np.linspace(0.9, 0.99, 10)]
    out = M.choose_threshold(y, s, min_specificity=0.98)
    assert out["val_sensitivity"] == 1.0 and out["val_specificity"] >= 0.98
    assert out["val_specificity"] == 1.0 and 0.2 < out["threshold"] < 0.9


def test_choose_threshold_when_a_negative_scores_one():
    # a negative at exactly 1.0 cannot be cleared by any threshold in [0, 1]: the threshold is 1.0, said plainly
    out = M.choose_threshold([0, 0, 1], [1.0, 0.2, 0.9], min_specificity=1.0)
    assert out["threshold"] == 1.0 and out["val_specificity"] == 0.5


def test_exact_ci_hand_checked():
    lo, hi = M.exact_ci(100, 100)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 100))  # (alpha/2)^(1/n) when all succeed
    lo, hi = M.exact_ci(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10))
    lo, hi = M.exact_ci(5, 10)
    assert lo == pytest.approx(0.187086, abs=1e-5) and hi == pytest.approx(0.812914, abs=1e-5)
