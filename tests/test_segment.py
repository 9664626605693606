"""Colour segmentation of smear images: Otsu threshold, regions, background colour."""
from __future__ import annotations

import numpy as np
from PIL import Image

from leukoview.primitives import segment
from tests.conftest import smear_array


def test_otsu_separates_two_levels():
    v = np.concatenate([np.full(100, 10.0), np.full(50, 200.0)])
    assert 10 < segment.otsu(v) < 200


def test_regions_find_the_cell_nucleus_and_corners():
    parts = segment.regions(smear_array())
    assert parts["stained"][30, 34] and not parts["stained"][2, 2]
    assert parts["nucleus-dark"][30, 34] and not parts["nucleus-dark"][21, 25]
    assert parts["stained"].sum() == 400 and (parts["background"] == ~parts["stained"]).all()
    assert parts["corners"][0, 0] and parts["corners"][63, 63] and not parts["corners"][32, 32]


def test_background_colour_is_the_pale_background_not_the_cell():
    colour = segment.background_colour(Image.fromarray(smear_array()))
    np.testing.assert_allclose(colour, (235, 215, 220), atol=1)


def _cell(size=96, centre=(40, 56), radius=12):
    yy, xx = np.mgrid[:size, :size]
    img = np.full((size, size, 3), (230, 190, 200), np.uint8)  # pink-pale background
    img[(yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius ** 2] = (110, 60, 180)  # a violet nucleus
    return Image.fromarray(img)


def test_locate_cell_boxes_the_nucleus_scaled_to_its_size():
    crop = segment.locate_cell(_cell(), scale=1.6)
    assert crop.found and "cell found" in crop.note
    left, top, right, bottom = crop.box
    assert right - left == bottom - top  # a square
    assert abs((left + right) / 2 - 56) <= 2 and abs((top + bottom) / 2 - 40) <= 2  # centred on the nucleus
    assert abs(crop.side - 1.6 * 24) <= 4  # 1.6 x the nucleus's diameter
    bigger = segment.locate_cell(_cell(radius=20), scale=1.6)
    assert bigger.side > crop.side * 1.4  # the box follows the cell's size, not the image's


def test_fill_holes_matches_scipy_on_random_masks():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for density in (0.2, 0.45, 0.6, 0.8):
        for _ in range(20):
            mask = ndimage.binary_opening(rng.random((40, 52)) < density)
            np.testing.assert_array_equal(segment.fill_holes(mask), ndimage.binary_fill_holes(mask))
    ring = np.zeros((9, 9), bool)
    ring[2:7, 2:7], ring[3:6, 3:6] = True, False
    assert segment.fill_holes(ring)[4, 4] and not segment.fill_holes(ring)[0, 0]  # the hole filled, the outside not
    assert not segment.fill_holes(np.zeros((5, 5), bool)).any() and segment.fill_holes(np.ones((5, 5), bool)).all()


def test_locate_cell_prefers_the_larger_nucleus_unless_it_is_far_off_centre():
    def two(first, second):
        yy, xx = np.mgrid[:128, :128]
        img = np.full((128, 128, 3), (230, 190, 200), np.uint8)
        for (cy, cx, r) in (first, second):
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2] = (110, 60, 180)
        return Image.fromarray(img)

    def centre(crop):
        return (crop.box[1] + crop.box[3]) / 2, (crop.box[0] + crop.box[2]) / 2

    near = segment.locate_cell(two((64, 64, 10), (30, 96, 16)))  # both near enough: the larger one wins
    assert abs(centre(near)[0] - 30) <= 2 and abs(centre(near)[1] - 96) <= 2
    edge = segment.locate_cell(two((64, 64, 12), (16, 16, 16)))  # a larger one near the corner: the central
    assert abs(centre(edge)[0] - 64) <= 2 and abs(centre(edge)[1] - 64) <= 2


def test_locate_cell_falls_back_to_the_whole_image_and_says_so():
    blank = Image.new("RGB", (80, 60), (235, 220, 215))
    crop = segment.locate_cell(blank)
    assert not crop.found and crop.box == (0, 0, 80, 60) and "no cell found" in crop.note
    assert segment.crop_cell(blank, crop) is blank


def test_crop_past_the_edge_is_padded_with_the_background():
    img = _cell(centre=(8, 8), radius=7)
    crop = segment.locate_cell(img, scale=3.0)
    assert crop.box[0] < 0 and crop.box[1] < 0
    out = np.asarray(segment.crop_cell(img, crop))
    assert out.shape[:2] == (crop.side, crop.side)
    np.testing.assert_allclose(out[0, 0], (230, 190, 200), atol=1)  # the padded corner: background colour


def test_min_side_keeps_a_tiny_object_small_in_its_frame():
    tiny = _cell(size=120, centre=(60, 60), radius=7)  # a platelet-sized stained dot
    plain = segment.locate_cell(tiny, scale=1.6)
    assert plain.found and plain.side < 30  # without a floor the dot would be blown up to fill the input
    floored = segment.locate_cell(tiny, scale=1.6, min_side=0.5)
    assert floored.found and floored.side == 60  # half the image's shorter side
    left, top, right, bottom = floored.box
    assert abs((left + right) / 2 - 60) <= 2 and abs((top + bottom) / 2 - 60) <= 2  # still centred on it
    big = _cell(size=120, centre=(60, 60), radius=30)  # a leukocyte: the floor does not touch its box
    assert segment.locate_cell(big, min_side=0.5).box == segment.locate_cell(big).box


def test_inside_keeps_a_frame_filling_cell_unpadded():
    img = _cell(size=96, centre=(44, 50), radius=40)  # a whole-cell crop: the cell fills the frame
    padded = segment.locate_cell(img, scale=1.6)
    assert padded.side > 96 and padded.box[0] < 0  # 1.6x the nucleus reaches past the image
    kept = segment.locate_cell(img, scale=1.6, inside=True)
    left, top, right, bottom = kept.box
    assert kept.found and (left, top, right, bottom) == (0, 0, 96, 96)
    shifted = segment.square_box(90, 10, 40, 96, 96, inside=True)  # a square near a corner is moved in
    assert shifted == (56, 0, 96, 40)
    assert segment.square_box(90, 10, 40, 96, 96) == (70, -10, 110, 30)  # without inside it reaches past


def test_training_jitter_stays_inside_when_the_spec_says_so():
    from leukoview.models.transforms import LocateCell

    img = _cell(size=96, centre=(44, 50), radius=40)
    spec = {"size": 64, "locate": {"method": "nucleus", "scale": 1.6, "inside": True}}
    np.random.seed(0)
    for _ in range(30):  # jittered boxes are shrunk and shifted in, so no crop is padded
        out = LocateCell(spec, jitter=0.15)(img)
        assert out.size[0] == out.size[1] <= 96
    spec["locate"]["inside"] = False
    sizes = {LocateCell(spec, jitter=0.15)(img).size[0] for _ in range(30)}
    assert max(sizes) > 96  # the old framing pads past the image


def test_the_gate_tells_a_blue_sky_from_violet_nuclei():
    from leukoview.primitives.segment import smear_gate

    rng = np.random.default_rng(0)
    sky = np.empty((96, 96, 3), np.float32)
    sky[:60] = (140, 185, 230)  # blue sky: blue well above green, red below green
    sky[60:] = (200, 120, 60)  # an orange roof
    sky += rng.normal(0, 4, sky.shape)
    refused = smear_gate(Image.fromarray(sky.clip(0, 255).astype(np.uint8)))
    assert "no violet stained pixels" in refused
    smear = np.empty((96, 96, 3), np.float32)
    smear[:] = (235, 215, 220)  # pale pink background
    yy, xx = np.mgrid[:96, :96]
    smear[(yy - 48) ** 2 + (xx - 48) ** 2 < 15 ** 2] = (120, 60, 170)  # a violet nucleus: red above green
    smear += rng.normal(0, 4, smear.shape)
    assert smear_gate(Image.fromarray(smear.clip(0, 255).astype(np.uint8))) == ""


def test_the_gate_refuses_random_pixels_but_not_a_grainy_smear():
    from leukoview.primitives.segment import pixel_noise, smear_gate

    rng = np.random.default_rng(1)
    noise = rng.normal((150, 90, 200), 50, (128, 128, 3)).clip(0, 255).astype(np.uint8)  # violet on average
    assert "pixel-to-pixel noise" in smear_gate(Image.fromarray(noise))
    smear = np.empty((128, 128, 3), np.float32)
    smear[:] = (235, 215, 220)
    yy, xx = np.mgrid[:128, :128]
    for cy, cx in ((40, 40), (90, 80), (30, 100)):
        smear[(yy - cy) ** 2 + (xx - cx) ** 2 < 14 ** 2] = (120, 60, 170)
    smear += rng.normal(0, 8, smear.shape)  # a grainy camera
    smear = smear.clip(0, 255).astype(np.uint8)
    assert pixel_noise(np.asarray(smear, np.float32)) < 0.45 and smear_gate(Image.fromarray(smear)) == ""


def test_the_gate_refuses_gradients_and_drawings_but_not_smears():
    from leukoview.primitives.segment import smear_gate

    yy, xx = np.mgrid[:128, :128] / 128
    t = (0.6 * xx + 0.4 * yy)[..., None]
    gradient = ((150, 80, 200) * (1 - t) + (230, 200, 240) * t).astype(np.uint8)  # violet to pale: no cells
    assert "smooth colour gradient" in smear_gate(Image.fromarray(gradient))
    drawing = np.full((128, 128, 3), (240, 235, 245), np.uint8)  # a flat page
    drawing[20:100, 20:24] = drawing[20:24, 20:100] = (120, 60, 170)  # violet strokes
    drawing[60:80, 60:90] = (120, 60, 170)
    assert "one exact colour" in smear_gate(Image.fromarray(drawing))
    rng = np.random.default_rng(2)
    smear = drawing.astype(np.float32) + rng.normal(0, 4, drawing.shape)  # the same strokes through a camera
    smear[:, :, :] = (235, 215, 220) + rng.normal(0, 4, drawing.shape)
    smear[(yy * 128 - 64) ** 2 + (xx * 128 - 64) ** 2 < 15 ** 2] = (120, 60, 170)
    assert smear_gate(Image.fromarray(smear.clip(0, 255).astype(np.uint8))) == ""
    cnmc_like = np.zeros((128, 128, 3), np.uint8)  # a segmented cell on exact black, as C-NMC ships them
    cnmc_like[(yy * 128 - 64) ** 2 + (xx * 128 - 64) ** 2 < 30 ** 2] = (150, 90, 190)
    cnmc_like = (cnmc_like + rng.integers(0, 3, cnmc_like.shape) * (cnmc_like > 0)).astype(np.uint8)
    assert smear_gate(Image.fromarray(cnmc_like)) == ""


def test_the_input_contact_sheet_shows_the_framing_it_is_asked_for(tmp_path, tiny_bundle, monkeypatch):
    """scripts/probes/render_wbc9_inputs.py: one row per folder, the card's locating step overridden by --set."""
    import importlib.util

    from leukoview.models.bundle import load_bundle
    from tests.conftest import REPO

    root = load_bundle(tiny_bundle).card.config["data_root"]
    monkeypatch.setenv("LEUKOVIEW_DATA_ROOT", root)
    spec = importlib.util.spec_from_file_location("render", REPO / "scripts" / "probes" / "render_wbc9_inputs.py")
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    out = render.main(["--bundle", str(tiny_bundle), "--folder", "cells/normal", "--folder", "cells/blast",
                       "--per-row", "3", "--set", "min_side=0.5", "--set", "inside=true",
                       "--out", str(tmp_path / "sheet.png")])
    sheet = Image.open(out)
    assert sheet.size == (3 * 128, 2 * 128)
    assert np.asarray(sheet)[:128].std() > 5 and np.asarray(sheet)[128:].std() > 5  # both rows drawn
    assert render._value("true") is True and render._value("0.5") == 0.5 and render._value("nucleus") == "nucleus"
