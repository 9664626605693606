"""Shortcut audit on synthetic datasets whose classes differ either by acquisition (background tint) or only by
the cell."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from leukoview.audits import shortcuts


def _dataset(root, *, tinted: bool, n: int = 60):
    rng = np.random.default_rng(0)
    rows = []
    for label, hue in (("normal", 0), ("blast", 1)):
        (root / label).mkdir(parents=True)
        for i in range(n):
            bg = np.array([232, 192, 200]) + (np.array([-25, 10, 25]) if tinted and hue else 0)
            img = np.ones((64, 64, 3)) * bg + rng.normal(0, 4, (64, 64, 3))
            cy, cx = rng.integers(26, 38, 2)
            yy, xx = np.mgrid[:64, :64]
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < 81] = (110 - 40 * hue, 60, 160 + 30 * hue)  # the cell tells
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / label / f"{i:03d}.png")
            rows.append({"file": f"{label}/{i:03d}.png", "label": label,
                         "split": "train" if i < 40 else "test"})
    split = pd.DataFrame(rows)
    return SimpleNamespace(split=lambda: split, classes=["normal", "blast"], positive=["blast"], id="fake",
                           task="cells", card=SimpleNamespace(split_hash="h"), metrics={"balanced_accuracy": 1.0})


def test_acquisition_cue_is_flagged_high(tmp_path):
    r = shortcuts.audit(_dataset(tmp_path, tinted=True), tmp_path)
    assert r["level"] == "high" and "HIGH" in r["message"]
    assert r["groups"]["background colour"]["balanced_accuracy"] > 0.9
    assert r["strongest_group"] in ("border colour", "background colour", "corners")


def test_cell_only_difference_is_not_flagged(tmp_path):
    r = shortcuts.audit(_dataset(tmp_path, tinted=False), tmp_path)
    assert r["level"] == "low", r["groups"]["all cues"]
    assert r["groups"]["image size"]["balanced_accuracy"] == pytest.approx(0.5)


def test_the_audit_lives_in_its_bundle_and_is_found_per_task(tiny_bundle, tmp_path):
    import shutil

    from leukoview.models.bundle import load_bundle

    for name in ("a", "b"):
        shutil.copytree(tiny_bundle, tmp_path / name)
    assert shortcuts.by_task([load_bundle(tmp_path / "a")]) == {}
    shortcuts.write(tmp_path / "a", {"task": "t1", "x": 2})
    shortcuts.write(tmp_path / "b", {"task": "t1", "x": 3})
    shortcuts.write(tmp_path / "b", {"task": "t1", "x": 4})  # rewritten, not appended
    found = shortcuts.by_task([load_bundle(tmp_path / "b"), load_bundle(tmp_path / "a")])
    assert found == {"t1": {"task": "t1", "x": 4}}  # the first bundle of the task that has one
    assert "metrics.json" in load_bundle(tmp_path / "b").card.files  # stored through the bundle (verified)


def test_levels():
    assert shortcuts.level_of(0.25, 4) == "low"
    assert shortcuts.level_of(0.55, 4) == "moderate"
    assert shortcuts.level_of(0.7, 4) == "high"
    assert shortcuts.level_of(0.3, 5, positive_auc=0.95) == "high"  # the suspicion score is what matters
    assert shortcuts.level_of(0.3, 5, positive_auc=0.6) == "low"
