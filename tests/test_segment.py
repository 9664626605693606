"""Colour segmentation of smear images: Otsu threshold, regions, background colour."""
from __future__ import annotations

import numpy as np
from PIL import Image

from leukoview import segment


def _smear():
    img = np.full((64, 64, 3), (235, 215, 220), np.uint8)  # pale background
    img[20:40, 24:44] = (120, 50, 160)  # a stained cell
    img[26:34, 30:38] = (60, 20, 110)  # its dark nucleus
    return img


def test_otsu_separates_two_levels():
    v = np.concatenate([np.full(100, 10.0), np.full(50, 200.0)])
    assert 10 < segment.otsu(v) < 200


def test_regions_find_the_cell_nucleus_and_corners():
    parts = segment.regions(_smear())
    assert parts["stained"][30, 34] and not parts["stained"][2, 2]
    assert parts["nucleus-dark"][30, 34] and not parts["nucleus-dark"][21, 25]
    assert parts["stained"].sum() == 400 and (parts["background"] == ~parts["stained"]).all()
    assert parts["corners"][0, 0] and parts["corners"][63, 63] and not parts["corners"][32, 32]


def test_background_colour_is_the_pale_background_not_the_cell():
    colour = segment.background_colour(Image.fromarray(_smear()))
    np.testing.assert_allclose(colour, (235, 215, 220), atol=1)
