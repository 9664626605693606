"""CAM mass statistics: segmentation of synthetic smears, shares, and the per-bundle summary."""
from __future__ import annotations

import json

import numpy as np
import pytest

from leukoview.app import compare
from leukoview.audits import camstats
from leukoview.primitives.segment import regions
from tests.conftest import smear_array


def test_mass_on_the_cell_exceeds_its_area_for_a_map_on_the_cell():
    parts = regions(smear_array())
    on_cell = np.zeros((64, 64))
    on_cell[22:38, 26:42] = 1
    s = camstats.mass_shares(on_cell, parts)
    assert s["stained"]["mass"] == pytest.approx(1.0) and s["stained"]["area"] == pytest.approx(400 / 4096)
    uniform = camstats.mass_shares(np.ones((64, 64)), parts)  # a map that ignores the image: mass = area
    assert uniform["stained"]["mass"] == pytest.approx(uniform["stained"]["area"])
    corner = np.zeros((64, 64))
    corner[:5, :5] = 1
    assert camstats.mass_shares(corner, parts)["corners"]["mass"] == pytest.approx(1.0)


def test_bundle_stats_written_into_the_bundle_and_tabled(tiny_bundle, tmp_path):
    import shutil

    from leukoview.models.bundle import load_bundle

    folder = tmp_path / "b"
    shutil.copytree(tiny_bundle, folder)
    root = json.loads((folder / "card.json").read_text())["training"]["config"]["data_root"]
    stats = camstats.bundle_stats(folder, root, progress=False)
    assert stats["images"] == len(load_bundle(folder).predictions())
    camstats.write(folder, stats)
    b = load_bundle(folder)  # still verifies, with the new file recorded
    assert camstats.load(b)["images"] == stats["images"]
    t = compare.cam_table([b])
    assert set(t["class"]) == {"all test images", *b.classes}


def test_bundle_stats_on_a_sample_takes_each_class_and_records_the_faithfulness_band(tiny_bundle):
    root = json.loads((tiny_bundle / "card.json").read_text())["training"]["config"]["data_root"]
    stats = camstats.bundle_stats(tiny_bundle, root, max_images=4, progress=False)
    assert stats["images"] == 4 and set(stats["per_class"]) == {"normal", "blast"}
    assert stats["faithfulness_band"]["images"] == 4 and set(stats["deletion"]["per_class"]) == {"normal", "blast"}


def test_mass_shares_of_known_maps():
    """A map that lies only on the cell puts all its mass there; a flat map puts each region's area share."""
    cell = np.zeros((10, 10), bool)
    cell[2:5, 2:5] = True
    parts = {"cells": cell, "background": ~cell}
    on_cell = camstats.mass_shares(cell.astype(float), parts)
    assert on_cell["cells"]["mass"] == 1.0 and on_cell["background"]["mass"] == 0.0
    assert on_cell["cells"]["area"] == pytest.approx(0.09)
    flat = camstats.mass_shares(np.ones((10, 10)), parts)
    assert flat["cells"]["mass"] == pytest.approx(0.09) and flat["background"]["mass"] == pytest.approx(0.91)
    assert np.isnan(camstats.mass_shares(np.zeros((10, 10)), parts)["cells"]["mass"])  # no map, no share
