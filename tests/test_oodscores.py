"""OOD score comparison: each method's score on toy features, and the audit on the tiny bundle."""
from __future__ import annotations

import json
import shutil

import numpy as np

from leukoview.app import compare
from leukoview.audits import oodscores
from leukoview.models import bundle
from leukoview.primitives.ood import fit_ood


def test_every_method_scores_far_points_higher_than_near_ones():
    rng = np.random.default_rng(0)
    train = np.r_[rng.normal(0, 1, (100, 8)) + 5, rng.normal(0, 1, (100, 8)) - 5]
    labels = np.r_[np.zeros(100, int), np.ones(100, int)]
    state, _ = fit_ood(train, labels, train[:20], components=4)
    bank = train / np.linalg.norm(train, axis=1, keepdims=True)
    near = train[:5] + rng.normal(0, 0.1, (5, 8))
    far = rng.normal(0, 1, (5, 8)) * 20
    confident = np.tile([10.0, -10.0], (5, 1))
    unsure = np.zeros((5, 2))
    s_near = oodscores.method_scores(state, bank, confident, near, 1.0)
    s_far = oodscores.method_scores(state, bank, unsure, far, 1.0)
    for m in oodscores.METHODS:
        assert s_far[m].min() > s_near[m].max(), m
    exact = oodscores.method_scores(state, bank, confident, train[:3], 1.0, k=1)["knn"]
    np.testing.assert_allclose(exact, 0, atol=1e-5)  # a training image is its own nearest neighbour


def test_compare_ood_on_the_tiny_bundle_is_stored_and_tabled(tiny_bundle, tmp_path):
    folder = tmp_path / "b"
    shutil.copytree(tiny_bundle, folder)
    root = json.loads((folder / "card.json").read_text())["training"]["config"]["data_root"]
    r = oodscores.compare_ood(folder, root, n_generated=8, progress=False)
    own = r["sets"]["own test split (in distribution)"]
    assert set(own) == set(oodscores.METHODS)
    assert {"photographs (crops)", "coloured noise"} <= set(r["sets"])
    oodscores.write(folder, r)
    t = compare.ood_compare_table([bundle.load_bundle(folder)])
    assert len(t) == len(r["sets"]) and "knn AUROC" in t.columns
