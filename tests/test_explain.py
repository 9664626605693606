import numpy as np
import pytest

from leukoview.jobs import explain
from leukoview.jobs.predict import Predictor
from leukoview.models.archs import REGISTRY, get_arch
from tests.conftest import cell_image


@pytest.fixture(scope="module")
def predictor(tiny_bundle):
    return Predictor(tiny_bundle)


@pytest.mark.parametrize("method", explain.METHODS)
def test_every_method_gives_a_map_with_structure(predictor, method):
    ex = explain.explain(predictor, cell_image(3, np.random.default_rng(0)), method=method)
    size = predictor.spec["size"]
    assert ex.mask.shape == (size, size) and ex.image.shape == (size, size, 3)
    assert ex.mask.std() > 0.01  # not a flat map: it singles some pixels out
    assert ex.target == predictor.predict(cell_image(3, np.random.default_rng(0))).predicted


def test_target_class_is_validated(predictor):
    with pytest.raises(ValueError, match="not one of"):
        explain.explain(predictor, cell_image(1, np.random.default_rng(0)), target="platelet")
    import torch

    x = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ValueError, match="outside"):
        explain.cam_mask(predictor.model, "features", x, 5, n_classes=2)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_gradcam_works_for_every_registered_architecture(name):
    import torch

    spec = get_arch(name)
    torch.manual_seed(0)
    model, _ = spec.build(3)
    model.eval()
    x = torch.randn(1, 3, spec.input_size, spec.input_size)
    # the target layer is a spatial feature map on the path to the class score
    seen = {}
    handle = model.get_submodule(spec.cam_layer).register_forward_hook(lambda _m, _i, out: seen.update(out=out))
    x_grad = x.clone().requires_grad_(True)
    model(x_grad)[0, 1].backward()
    handle.remove()
    out = seen["out"]
    assert out.ndim == 4 and out.shape[2] > 1 and out.shape[3] > 1
    assert float(x_grad.grad.abs().sum()) > 0
    mask = explain.cam_mask(model, spec.cam_layer, x, 1, n_classes=3)
    assert mask.shape == (spec.input_size, spec.input_size)
    plain = explain.cam_mask(model, spec.cam_layer, x, 1, n_classes=3, fast=False)
    np.testing.assert_allclose(mask, plain, atol=1e-5)  # the fast path gives the same map
    assert all(p.requires_grad for p in model.parameters())  # and leaves the model as it found it


@pytest.mark.parametrize("method", explain.METHODS)
def test_fast_cam_equals_full_backward_for_every_method(predictor, method):
    x = predictor.preprocess([cell_image(3, np.random.default_rng(4))])
    fast = explain.cam_mask(predictor.model, "features", x, 1, method=method, n_classes=2)
    plain = explain.cam_mask(predictor.model, "features", x, 1, method=method, n_classes=2, fast=False)
    np.testing.assert_allclose(fast, plain, atol=1e-5)


def test_overlay_blends_and_checks_shape():
    img = np.zeros((4, 4, 3), np.uint8)
    mask = np.ones((4, 4), np.float32)
    out = explain.overlay(img, mask, opacity=1.0)
    assert out.dtype == np.uint8 and out[..., 0].max() > 100  # jet(1.0) is dark red
    assert (explain.overlay(img, mask, opacity=0.0) == 0).all()
    with pytest.raises(ValueError, match="differ in size"):
        explain.overlay(img, np.ones((3, 3)))


class _TopLeftModel:
    """A stand-in predictor whose class-1 logit reads only the top-left quadrant of the image (channel 0): a map on
    that quadrant is faithful by construction, a map on the opposite quadrant is not."""

    temperature = 1.0

    def forward(self, x):
        s = x[:, 0, :16, :16].mean((1, 2)).numpy()
        return np.stack([np.zeros(len(s)), 8 * s], 1), None


def _quadrant_mask(top_left: bool) -> np.ndarray:
    mask = np.zeros((32, 32), np.float32)
    if top_left:
        mask[:16, :16] = 1
    else:
        mask[16:, 16:] = 1
    return mask


def test_faithful_map_reads_differently_from_an_unfaithful_one():
    import torch

    x = torch.ones(1, 3, 32, 32)
    good = explain.faithfulness(_TopLeftModel(), x, _quadrant_mask(True), 1, fraction=0.25)
    bad = explain.faithfulness(_TopLeftModel(), x, _quadrant_mask(False), 1, fraction=0.25)
    assert good["confidence"] == pytest.approx(1 / (1 + np.exp(-8)))
    assert good["confidence_without_highlight"] == pytest.approx(0.5)  # the quadrant removed: logit 0
    assert good["drop"] > good["drop_random_region"] + 0.02
    assert bad["drop"] == pytest.approx(0.0, abs=1e-6)
    assert good["reading"].startswith("the highlighted region matters more")
    assert bad["reading"] != good["reading"] and "caution" in bad["reading"]
    assert good["drop"] == pytest.approx(1 / (1 + np.exp(-8)) - 0.5)  # the whole logit lives in the quadrant
    assert "lowers it by" in explain.faithfulness_sentence(good, "blast")
    raised = {**bad, "drop": -0.1, "drop_random_region": 0.0, "gain": -0.1}
    assert "raises it by 10.0%" in explain.faithfulness_sentence(raised, "blast")


def test_faithfulness_reading_uses_the_models_own_band():
    band = {"p10": 0.01, "p25": 0.05, "p50": 0.2}
    assert "usual maps" in explain.faithfulness_reading(0.3, band)
    assert "low end" in explain.faithfulness_reading(0.02, band)
    assert "9 in 10" in explain.faithfulness_reading(-0.1, band)


def test_deletion_curve_favours_the_faithful_map():
    import torch

    x = torch.ones(1, 3, 32, 32)
    good = explain.deletion_curve(_TopLeftModel(), x, _quadrant_mask(True), 1)
    bad = explain.deletion_curve(_TopLeftModel(), x, _quadrant_mask(False), 1)
    assert good["advantage"] > 0.05 and good["advantage"] > bad["advantage"]
    assert good["map"][0] >= good["map"][-1]  # more removed, lower probability


def test_tta_scores_the_eight_views(predictor):
    from PIL import Image

    img = cell_image(3, np.random.default_rng(1))
    scores = explain.tta_suspicion(predictor, img)
    assert scores.shape == (8,)
    assert scores[0] == pytest.approx(predictor.predict(img).suspicion, abs=1e-6)  # view 0 is the image itself
    flat = explain.tta_suspicion(predictor, Image.new("RGB", img.size, (200, 120, 180)))
    np.testing.assert_allclose(flat, flat[0], atol=1e-6)  # a symmetric image looks the same in every view


@pytest.mark.parametrize("method", explain.METHODS)
def test_maps_follow_from_activations_and_gradients_alone(method):
    # two channels: one active on a bright spot with a positive gradient (evidence for the class), one spread
    # thinly with none; every method's map, made without any network, peaks on the spot
    a = np.full((2, 8, 8), 0.1, np.float32)
    a[0, 5, 2] = 5.0
    g = np.zeros_like(a)
    g[0] = 0.5
    mask = explain.cam_from(explain.CamInputs(activations=a, gradients=g, size=(32, 16), target=0), method)
    assert mask.shape == (16, 32) and mask.max() == pytest.approx(1.0, abs=1e-3)
    y, x = np.unravel_index(mask.argmax(), mask.shape)
    assert abs(y - (5 + 0.5) * 2) <= 2 and abs(x - (2 + 0.5) * 4) <= 3  # where the spot is, at the map's scale
    with pytest.raises(ValueError, match="unknown CAM method"):
        explain.cam_from(explain.CamInputs(activations=a, gradients=g, size=(8, 8), target=0), "Score-CAM")


def test_a_large_original_is_shown_scaled_down_with_its_box_and_map_in_place():
    from PIL import Image

    from leukoview.primitives.segment import CellCrop

    big = Image.new("RGB", (4096, 2048), (230, 200, 200))
    mask = np.zeros((16, 16), np.float32)
    mask[4:12, 4:12] = 1.0
    ex = explain.Explanation(method="Grad-CAM", target="x", mask=mask, image=np.zeros((16, 16, 3), np.uint8),
                             faithfulness=None, crop=CellCrop(box=(2048, 1024, 2560, 1536), found=True, note=""))
    shown, on = explain.on_original(ex, big)
    assert shown.shape == (512, 1024, 3) and on.shape == (512, 1024)  # 4096 px wide -> DISPLAY_SIDE
    ys, xs = np.nonzero(on > 0.5)
    assert 512 <= xs.min() and xs.max() < 640 and 256 <= ys.min() and ys.max() < 384  # inside the scaled box
    assert (shown[256, 512:640] != (230, 200, 200)).any(axis=-1).all()  # the box's top edge is drawn there
