"""Acquisition augmentation operations and the training augmentation built from them."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from leukoview.primitives import augment
from leukoview.primitives.segment import background_mask
from tests.conftest import cell_image


@pytest.fixture
def smear():
    return cell_image(2, np.random.default_rng(0), size=96)


def test_hed_jitter_zero_is_identity_and_strength_grows(smear):
    rng = np.random.default_rng(0)
    same = np.asarray(augment.hed_jitter(smear, 0.0, rng), np.int16)
    assert np.abs(same - np.asarray(smear, np.int16)).max() <= 1
    small = np.abs(np.asarray(augment.hed_jitter(smear, 0.05, np.random.default_rng(1)), float) - np.asarray(smear))
    large = np.abs(np.asarray(augment.hed_jitter(smear, 0.3, np.random.default_rng(1)), float) - np.asarray(smear))
    assert large.mean() > small.mean() > 0


def test_background_recolour_moves_background_only(smear):
    mask = background_mask(smear)
    out = np.asarray(augment.recolour_background(smear, (120, 160, 240)), float)
    src = np.asarray(smear, float)
    assert np.allclose(out[~mask], src[~mask])
    assert np.abs(np.median(out[mask], 0) - (120, 160, 240)).max() <= 2


def test_rescale_keeps_size(smear):
    for f in (0.75, 1.0, 1.33):
        assert augment.rescale(smear, f).size == smear.size
    assert augment.jpeg(smear, 30).size == smear.size and augment.blur(smear, 1.5).size == smear.size


def test_acquisition_jitter_runs_in_the_training_transform(smear):
    from leukoview.models.transforms import train_transform

    tf = train_transform({"size": 48, "mean": [0.5] * 3, "std": [0.5] * 3}, acquisition=True)
    x = tf(smear)
    assert x.shape == (3, 48, 48) and np.isfinite(x.numpy()).all()
    grey = augment.AcquisitionJitter(stain=0.0, p_grey=1, p_background=0, p_rescale=0, p_blur=0, p_jpeg=0)(smear)
    arr = np.asarray(grey)
    assert (arr[..., 0] == arr[..., 1]).all()


def test_background_swap_keeps_the_cells_and_changes_the_rest(smear):
    from leukoview.primitives.augment import BackgroundSwap, background_only, cell_mask, replace_background

    keep = cell_mask(smear)
    out = np.asarray(replace_background(smear, np.zeros(3)), float)
    src = np.asarray(smear, float)
    assert np.allclose(out[keep], src[keep]) and (out[~keep] == 0).all()
    bg = background_only(smear)
    assert np.abs(bg[keep] - np.median(src[~keep], 0)).max() < 30  # the other image's cells are painted over
    swap = BackgroundSwap(p=1.0, p_corners=0.0)
    first = np.asarray(swap(smear), float)
    assert np.allclose(first[keep], src[keep])  # cells untouched whatever the fill


def test_reinhard_normalisation_maps_colour_casts_of_one_image_together(smear):
    """Two acquisitions of one cell, one with a cold cast and lower contrast, normalise to nearly the same image,
    with their l-alpha-beta means moved towards the targets."""
    src = np.asarray(smear, np.float32)
    cast = np.clip((src - 128) * 0.6 + 128 + np.array([-25, 5, 30]), 0, 255).astype(np.uint8)

    before = np.abs(cast.astype(float) - src).mean()
    a = np.asarray(augment.normalise_lab(smear), float)
    b = np.asarray(augment.normalise_lab(Image.fromarray(cast)), float)
    assert np.abs(a - b).mean() < before / 4
    for img, out in ((smear, a), (Image.fromarray(cast), b)):  # means move onto the targets (up to clipping)
        own = augment.to_lab(np.asarray(img)).reshape(-1, 3).mean(0)
        moved = augment.to_lab(out.astype(np.uint8)).reshape(-1, 3).mean(0)
        assert (np.abs(moved - augment.LAB_TARGET_MEAN) < np.abs(own - augment.LAB_TARGET_MEAN)).all()
    # a grey image gets the target's mean tint, evenly: its near-zero colour spread is not stretched into noise
    grey = np.asarray(augment.normalise_lab(smear.convert("L").convert("RGB")), float)
    tint = (grey - grey.mean(2, keepdims=True))[grey.max(2) < 250]
    assert tint.std(0).max() < 4


def test_colour_normalised_spec_is_applied_alike_by_training_evaluation_and_the_predictor_path(smear):
    from leukoview.models.transforms import (
        colour_spec,
        eval_transform,
        normalise_batch,
        resize_array,
        resize_for_display,
        train_transform,
    )

    spec = {"size": 48, "mean": [0.5] * 3, "std": [0.5] * 3, "colour": colour_spec("reinhard")}
    plain = {k: v for k, v in spec.items() if k != "colour"}
    a = eval_transform(spec)(smear).numpy()
    b = normalise_batch([resize_array(smear, spec)], spec)[0]
    np.testing.assert_allclose(a, b, atol=2e-2)
    assert np.abs(normalise_batch([resize_array(smear, plain)], plain)[0] - b).mean() > 0.05
    np.testing.assert_array_equal(np.asarray(resize_for_display(smear, spec)), resize_array(smear, spec))
    assert train_transform(spec, acquisition=True)(smear).shape == (3, 48, 48)
    with pytest.raises(ValueError, match="unknown colour normalisation"):
        resize_array(smear, {**spec, "colour": {"method": "magic"}})



def test_sharpening_is_applied_alike_by_every_path_and_after_the_colour_step(smear):
    from PIL import ImageFilter

    from leukoview.models.transforms import (
        colour_spec,
        eval_transform,
        normalise_batch,
        resize_array,
        resize_for_display,
        sharpen_spec,
        train_transform,
    )

    colour = {"size": 48, "mean": [0.5] * 3, "std": [0.5] * 3, "colour": colour_spec("reinhard")}
    spec = {**colour, "sharpen": sharpen_spec(200, 2)}
    sharp = resize_array(smear, spec)
    np.testing.assert_allclose(eval_transform(spec)(smear).numpy(), normalise_batch([sharp], spec)[0], atol=2e-2)
    np.testing.assert_array_equal(np.asarray(resize_for_display(smear, spec)), sharp)
    # the order: the mask acts on the colour-normalised input (the other order gives another image)
    after = np.asarray(Image.fromarray(resize_array(smear, colour)).filter(
        ImageFilter.UnsharpMask(radius=2, percent=200, threshold=0)))
    np.testing.assert_array_equal(sharp, after)
    plain = resize_array(smear, colour).astype(float)
    grey = lambda a: a.mean(-1)  # noqa: E731
    edges = lambda a: np.abs(np.diff(grey(a), axis=1)).mean()  # noqa: E731
    assert edges(sharp.astype(float)) > 1.2 * edges(plain)  # sharper edges
    assert train_transform(spec, acquisition=True)(smear).shape == (3, 48, 48)
    with pytest.raises(ValueError, match="unknown sharpening"):
        resize_array(smear, {**spec, "sharpen": {"method": "magic"}})
