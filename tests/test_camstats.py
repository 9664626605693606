"""CAM mass statistics: segmentation of synthetic smears, shares, and the per-bundle summary."""
from __future__ import annotations

import json

import numpy as np
import pytest

from leukoview import camstats


def _smear():
    img = np.full((64, 64, 3), (235, 215, 220), np.uint8)  # pale background
    img[20:40, 24:44] = (120, 50, 160)  # a stained cell
    img[26:34, 30:38] = (60, 20, 110)  # its dark nucleus
    return img


def test_otsu_separates_two_levels():
    v = np.concatenate([np.full(100, 10.0), np.full(50, 200.0)])
    assert 10 < camstats.otsu(v) < 200


def test_regions_find_the_cell_nucleus_and_corners():
    parts = camstats.regions(_smear())
    assert parts["stained"][30, 34] and not parts["stained"][2, 2]
    assert parts["nucleus-dark"][30, 34] and not parts["nucleus-dark"][21, 25]
    assert parts["stained"].sum() == 400 and (parts["background"] == ~parts["stained"]).all()
    assert parts["corners"][0, 0] and parts["corners"][63, 63] and not parts["corners"][32, 32]


def test_mass_on_the_cell_exceeds_its_area_for_a_map_on_the_cell():
    parts = camstats.regions(_smear())
    on_cell = np.zeros((64, 64))
    on_cell[22:38, 26:42] = 1
    s = camstats.mass_shares(on_cell, parts)
    assert s["stained"]["mass"] == pytest.approx(1.0) and s["stained"]["area"] == pytest.approx(400 / 4096)
    assert s["stained"]["mass"] + s["background"]["mass"] == pytest.approx(1.0)
    corner = np.zeros((64, 64))
    corner[:5, :5] = 1
    assert camstats.mass_shares(corner, parts)["corners"]["mass"] == pytest.approx(1.0)


def test_bundle_stats_written_into_the_bundle_and_tabled(tiny_bundle, tmp_path):
    import shutil

    from leukoview.bundle import load_bundle

    folder = tmp_path / "b"
    shutil.copytree(tiny_bundle, folder)
    root = json.loads((folder / "card.json").read_text())["training"]["config"]["data_root"]
    stats = camstats.bundle_stats(folder, root, progress=False)
    assert stats["images"] == len(load_bundle(folder).predictions())
    for part in (stats["overall"], *stats["per_class"].values()):
        assert part["stained"]["mass"] + part["background"]["mass"] == pytest.approx(1.0, abs=1e-6)
    camstats.write(folder, stats)
    b = load_bundle(folder)  # still verifies, with the new file recorded
    assert camstats.load(b)["images"] == stats["images"]
    t = camstats.table([b])
    assert set(t["class"]) == {"all test images", *b.classes}
