"""Acquisition augmentation operations and the training augmentation built from them."""
from __future__ import annotations

import numpy as np
import pytest

from leukoview import augment
from leukoview.segment import background_mask
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
    from leukoview.transforms import train_transform

    tf = train_transform({"size": 48, "mean": [0.5] * 3, "std": [0.5] * 3}, acquisition=True)
    x = tf(smear)
    assert x.shape == (3, 48, 48) and np.isfinite(x.numpy()).all()
    grey = augment.AcquisitionJitter(stain=0.0, p_grey=1, p_background=0, p_rescale=0, p_blur=0, p_jpeg=0)(smear)
    arr = np.asarray(grey)
    assert (arr[..., 0] == arr[..., 1]).all()


def test_background_swap_keeps_the_cells_and_changes_the_rest(smear):
    from leukoview.augment import BackgroundSwap, background_only, cell_mask, replace_background

    keep = cell_mask(smear)
    out = np.asarray(replace_background(smear, np.zeros(3)), float)
    src = np.asarray(smear, float)
    assert np.allclose(out[keep], src[keep]) and (out[~keep] == 0).all()
    bg = background_only(smear)
    assert np.abs(bg[keep] - np.median(src[~keep], 0)).max() < 30  # the other image's cells are painted over
    swap = BackgroundSwap(p=1.0, p_corners=0.0)
    first = np.asarray(swap(smear), float)
    assert np.allclose(first[keep], src[keep])  # cells untouched whatever the fill
