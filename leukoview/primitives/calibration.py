"""Probabilities from logits: softmax, temperature scaling and the negative log-likelihood that training selects
epochs by. Pure numpy (scipy for the one-dimensional search); used by training, classical training and inference.
"""
from __future__ import annotations

import math

import numpy as np

CALIBRATION_SMOOTHING = 0.005


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (numerically stable)."""
    z = np.asarray(logits) / temperature
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def nll(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes (probabilities clipped at 1e-12)."""
    probs = np.asarray(probs)
    targets = np.asarray(targets)
    return float(-np.log(np.clip(probs[np.arange(len(targets)), targets], 1e-12, 1)).mean())


def fit_temperature(logits: np.ndarray, targets: np.ndarray, *, smoothing: float = CALIBRATION_SMOOTHING) -> float:
    """Temperature scaling (Guo et al. 2017): one scalar minimising validation cross-entropy.

    The targets are smoothed by ``smoothing`` (0.5 %): on an error-free validation split the plain NLL optimum is
    T -> 0 (every probability 0 or 1, no gradation left for review or threshold teaching); the small smoothing
    keeps T finite and costs at most about ``smoothing`` in calibration error.
    """
    from scipy.optimize import minimize_scalar

    n, c = logits.shape
    soft = np.full((n, c), smoothing / max(c - 1, 1))
    soft[np.arange(n), targets] = 1 - smoothing

    def loss(log_t):
        z = logits / math.exp(log_t)
        z = z - z.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        return -(soft * logp).sum(1).mean()

    res = minimize_scalar(loss, bounds=(math.log(0.05), math.log(20)), method="bounded")
    return float(math.exp(res.x))
