"""Out-of-distribution detector on a network's penultimate features: class-conditional Mahalanobis distance in a
PCA space (Lee et al. 2018). Fitted once after training (train features, threshold on validation), stored in the
bundle as plain arrays (``ood.safetensors``) and applied by the predictor."""
from __future__ import annotations

import numpy as np


def fit_ood(train_features: np.ndarray, train_labels: np.ndarray, val_features: np.ndarray, *,
            components: int = 64, val_quantile: float = 0.99) -> tuple[dict, float]:
    """Fit the detector on ``train_features``; its flag threshold is the ``val_quantile`` of the validation scores,
    so about 1 % of in-distribution images are flagged. Returns the arrays to store and the threshold."""
    x = np.asarray(train_features, np.float64)
    mean = x.mean(0)
    k = int(min(components, x.shape[0] - 1, x.shape[1]))
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    comp = vt[:k]
    z = (x - mean) @ comp.T
    labels = np.asarray(train_labels)
    classes = np.unique(labels)
    class_means = np.stack([z[labels == c].mean(0) for c in classes])
    centred = z - class_means[np.searchsorted(classes, labels)]
    cov = centred.T @ centred / len(z) + 1e-6 * np.eye(k)
    state = {"mean": mean.astype(np.float32), "components": comp.astype(np.float32),
             "class_means": class_means.astype(np.float32), "precision": np.linalg.inv(cov).astype(np.float32)}
    threshold = float(np.quantile(ood_scores(state, val_features), val_quantile))
    return state, threshold


def ood_scores(state: dict, features: np.ndarray) -> np.ndarray:
    """Distance to the nearest class centre (square root of the Mahalanobis form); larger = more unusual. In float64:
    an image's score then does not depend (to the stored 4 decimals) on which other images share its batch."""
    z = (np.asarray(features, np.float64) - state["mean"].astype(np.float64)) @ state["components"].T.astype(
        np.float64)
    diffs = z[:, None, :] - state["class_means"][None, :, :].astype(np.float64)
    d2 = np.einsum("nck,kl,ncl->nc", diffs, state["precision"].astype(np.float64), diffs)
    return np.sqrt(np.maximum(d2.min(1), 0))


def linear_scores(state: dict, features: np.ndarray) -> np.ndarray:
    """A linear detector's logit on standardised features (``mean``, ``scale``, ``coef``, ``intercept``): the
    wrong-task check of :mod:`leukoview.audits.wrongtask`; larger = more like another task's images."""
    z = (np.asarray(features, np.float32) - state["mean"]) / np.maximum(state["scale"], 1e-12)
    return z @ state["coef"] + float(state["intercept"][0])


def knn_distances(state: dict, x: np.ndarray) -> np.ndarray:
    """Mean Euclidean distance of each row of ``x`` to its ``k`` nearest reference rows, in standardised units:
    ``state`` holds the standardised ``reference`` rows, the ``mean`` and ``scale`` that standardised them and ``k``
    (the palette check, :mod:`leukoview.audits.palette`)."""
    ref = state["reference"].astype(np.float64)
    k = int(np.asarray(state["k"]).ravel()[0])
    z = (np.asarray(x, np.float64) - state["mean"]) / state["scale"]
    d2 = (z ** 2).sum(1)[:, None] + (ref ** 2).sum(1)[None] - 2 * z @ ref.T
    return np.sort(np.sqrt(np.clip(d2, 0, None)), axis=1)[:, :k].mean(1)
