import time

import numpy as np
import pytest

from leukoview import metrics as M
from leukoview.threshold import ThresholdAnalysis, compare, describe, natural_frequencies

Y = np.array([0, 0, 1, 1, 0, 1, 1, 0])
S = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.6, 0.7])


@pytest.mark.parametrize("t", [0.0, 0.1, 0.35, 0.5, 0.6, 0.75, 0.9, 1.0])
def test_at_matches_the_direct_confusion(t):
    assert ThresholdAnalysis(Y, S).at(t).confusion == M.confusion_at(Y, S, t)


def test_presets_hand_checked():
    ta = ThresholdAnalysis(Y, S)
    # Youden J ties at 0.5: t=0.8 (sens 2/4, spec 4/4), t=0.6 (3/4, 3/4), t=0.35 (4/4, 2/4); highest wins
    assert ta.youden() == pytest.approx(0.8)
    # sensitivity >= 95% with 4 positives means keeping all: the lowest positive score
    assert ta.highest_with_sensitivity(0.95) == pytest.approx(0.35)
    assert ta.highest_with_sensitivity(0.75) == pytest.approx(0.6)
    assert ta.presets(0.42)["shipped operating threshold"] == 0.42


def test_bootstrap_interval_contains_point_estimate():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = np.clip(y * 0.3 + rng.uniform(0, 0.7, 400), 0, 1)
    ta = ThresholdAnalysis(y, s, n_boot=300)
    p = ta.at(0.5)
    ci = ta.bootstrap(0.5)
    assert ci["sensitivity"][0] <= p.sensitivity <= ci["sensitivity"][1]
    assert ci["specificity"][0] <= p.specificity <= ci["specificity"][1]


def test_natural_frequencies_hand_checked():
    p = ThresholdAnalysis(Y, S).at(0.5)  # sens 0.75, spec 0.75
    f = natural_frequencies(p, 0.1)
    assert f["diseased"] == 100 and f["caught"] == 75 and f["missed"] == 25 and f["false_alarms"] == 225
    assert "75 of the 100" in describe(p, 0.1)
    q = ThresholdAnalysis(Y, S).at(0.3)  # sens 1, spec 0.5
    assert compare(q, p, 0.1) == ("Moving the threshold from 0.5 to 0.3: +25.0 cases caught and +225.0 false "
                                  "alarms per 1,000 screened.")


def test_recompute_is_fast_for_100k_scores():
    """Not a timing test of the machine: checks the per-move work is O(log n), far below a full recompute."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 100_000)
    s = rng.uniform(0, 1, 100_000)
    ta = ThresholdAnalysis(y, s, n_boot=0)
    t0 = time.perf_counter()
    for t in np.linspace(0, 1, 200):
        ta.at(t)
    per_move = (time.perf_counter() - t0) / 200
    t0 = time.perf_counter()
    M.confusion_at(y, s, 0.5)
    full = time.perf_counter() - t0
    assert per_move < full
