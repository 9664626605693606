import numpy as np
import pytest

from leukoview.app.threshold import GRID_STEP, ThresholdAnalysis, compare, describe, natural_frequencies
from leukoview.primitives import metrics as M

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


def test_bootstrap_intervals_have_the_binomial_width():
    """Known answers: every positive above the threshold gives [1, 1]; half of 200 positives gives an interval
    about 2 x 1.96 x sqrt(0.25 / 200) = 0.14 wide around 0.5 (a wrong resampling is far narrower or wider)."""
    y = np.r_[np.ones(200, int), np.zeros(200, int)]
    s = np.r_[np.tile([0.9, 0.1], 100), np.full(200, 0.05)]
    ta = ThresholdAnalysis(y, s, n_boot=400)
    ci = ta.bootstrap(0.5)
    assert ta.at(0.5).sensitivity == 0.5 and tuple(ci["specificity"]) == (1.0, 1.0)
    width = ci["sensitivity"][1] - ci["sensitivity"][0]
    assert 0.10 < width < 0.18 and abs(np.mean(ci["sensitivity"]) - 0.5) < 0.03


def test_natural_frequencies_hand_checked():
    p = ThresholdAnalysis(Y, S).at(0.5)  # sens 0.75, spec 0.75
    f = natural_frequencies(p, 0.1)
    assert f["diseased"] == 100 and f["caught"] == 75 and f["missed"] == 25 and f["false_alarms"] == 225
    assert "75 of the 100" in describe(p, 0.1)
    q = ThresholdAnalysis(Y, S).at(0.3)  # sens 1, spec 0.5
    assert compare(q, p, 0.1) == ("Moving the threshold from 0.5 to 0.3: +25.0 cases caught and +225.0 false "
                                  "alarms per 1,000 images scored.")
    assert "per 1,000 people screened" in compare(q, p, 0.1, unit="patient")  # people only when patients are known
    assert describe(p, 0.1).startswith("Of 1,000 images scored") and "people" in describe(p, 0.1, unit="patient")


def test_score_overlap_and_teaching_choices():
    from leukoview.app.threshold import score_overlap, teaching_choices

    assert score_overlap([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.0  # separated: the threshold trades nothing
    assert score_overlap([0, 0, 1, 1], [0.1, 0.6, 0.5, 0.9]) == 0.5  # 0.6 and 0.5 sit in the overlap
    choices = {"a": (0.0, 1.0), "b": (0.3, 0.95), "c": (0.1, 0.99), "d": (0.02, 0.99), "broken": (0.9, 0.6)}
    assert teaching_choices(choices) == [("b", 0.3), ("c", 0.1)]  # visible trade-off, still a useful model


@pytest.mark.parametrize("grouped", [False, True])
def test_grid_bootstrap_equals_rescoring_every_resample(grouped):
    """The precomputed per-resample counts give exactly what re-scoring each resample gives, including scores
    lying exactly on grid points and the ends of the slider."""
    rng = np.random.default_rng(1)
    n = 600
    y = rng.integers(0, 2, n)
    s = np.clip(y * 0.25 + rng.uniform(0, 0.75, n), 0, 1)
    s[:40] = np.round(s[:40] / GRID_STEP) * GRID_STEP  # some scores exactly on the grid
    s[40:45], s[45:50] = 0.0, 1.0
    groups = rng.integers(0, 150, n) if grouped else None
    ta = ThresholdAnalysis(y, s, groups=groups, n_boot=120, seed=3)
    for t in [0.0, GRID_STEP, float(s[0]), float(s[1]), 0.25, 0.5, 0.7315, 1.0]:
        assert ta.bootstrap(t) == ta.bootstrap_rescored(t), t
    off_grid = 0.50012345
    assert ta.bootstrap(off_grid) == ta.bootstrap_rescored(off_grid)


def test_grouped_bootstrap_resamples_whole_groups_as_drawn():
    """Reference: draw group numbers, concatenate each drawn group's members (ascending)."""
    rng = np.random.default_rng(2)
    groups = rng.choice(["p1", "p2", "p3", "p4", "p5"], 60)
    got = list(M.bootstrap_indices(60, groups=groups, n_boot=15, seed=9))
    names = np.unique(groups)
    members = [np.nonzero(groups == g)[0] for g in names]
    draws = np.random.default_rng(9)
    for idx in got:
        expected = np.concatenate([members[k] for k in draws.integers(0, len(members), len(members))])
        np.testing.assert_array_equal(idx, expected)
