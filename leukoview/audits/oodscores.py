"""Which out-of-distribution score separates what a model should not judge? The shipped Mahalanobis flag against
alternatives, each fitted on the bundle's own train/validation split only:

- ``mahalanobis``: the shipped detector (distance to the nearest class mean in a PCA of the penultimate features);
- ``knn``: distance to the k-th nearest training image on L2-normalised penultimate features (Sun et al. 2022);
- ``energy``: the negative free energy of the logits, ``-T logsumexp(logit / T)`` (Liu et al. 2020);
- ``msp``: one minus the highest softmax probability (Hendrycks & Gimpel 2017).

Each flag threshold is the 99th percentile on validation (about 1 % false flags in distribution). Per image set of
:func:`leukoview.audits.oodeval.image_sets` (generated non-cells, other tasks' cells, held-out classes): the share
flagged, and the AUROC of the score separating the set from the own test split. ``python -m leukoview oodscores BUNDLE``
stores it in ``metrics.json["ood_compare"]``; the comparison page shows it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from leukoview import audits
from leukoview.primitives import metrics
from leukoview.primitives.calibration import softmax
from leukoview.primitives.images import load_image
from leukoview.primitives.ood import ood_scores

METHODS = ("mahalanobis", "knn", "energy", "msp")


def _normalise(f: np.ndarray) -> np.ndarray:
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def method_scores(state: dict, bank: np.ndarray, logits: np.ndarray, feats: np.ndarray, temperature: float, *,
                  k: int = 10) -> dict[str, np.ndarray]:
    """Every method's OOD score (larger = more unusual) for a batch of logits and penultimate features."""
    z = _normalise(np.asarray(feats, np.float32))
    sims = z @ bank.T
    kth = np.sort(sims, axis=1)[:, -min(k, bank.shape[0])]
    lt = np.asarray(logits, np.float64) / temperature
    m = lt.max(1, keepdims=True)
    logsumexp = (m + np.log(np.exp(lt - m).sum(1, keepdims=True)))[:, 0]
    return {"mahalanobis": ood_scores(state, feats), "knn": 1 - kth, "energy": -temperature * logsumexp,
            "msp": 1 - softmax(logits, temperature).max(1)}


def _outputs(p, images: list) -> tuple[np.ndarray, np.ndarray]:
    """Raw logits and penultimate features of paths or PIL images, through the predictor's preprocessing."""
    logits, feats = [], []
    for i in range(0, len(images), 32):
        chunk = [load_image(x) if isinstance(x, Path) else x for x in images[i:i + 32]]
        lo, fe = p.forward(p.preprocess(chunk))
        logits.append(lo)
        feats.append(fe)
    return np.concatenate(logits), np.concatenate(feats)


def compare_ood(bundle_path: Path, root: Path, *, bank_size: int = 2000, n_generated: int = 200, per_set: int = 200,
                seed: int = 0, progress: bool = True) -> dict:
    """Fit every method on the bundle's split and score every OOD set; see the module docstring."""
    from tqdm import tqdm

    from leukoview.audits.oodeval import image_sets
    from leukoview.jobs.predict import Predictor

    p = Predictor(bundle_path)
    if not p.explainable:
        raise ValueError(f"{p.bundle.id} is a classical model: the comparison needs a network's features")
    split = p.bundle.split()
    root = Path(root)
    train = split[split["split"] == "train"]
    train = train.sample(min(len(train), bank_size), random_state=seed)
    parts = {"train": [root / f for f in train["file"]],
             "val": [root / f for f in split.loc[split["split"] == "val", "file"]],
             "test": [root / f for f in split.loc[split["split"] == "test", "file"]]}
    out = {name: _outputs(p, files) for name, files in tqdm(parts.items(), desc="own split", disable=not progress)}
    bank = _normalise(out["train"][1].astype(np.float32))
    scores = {name: method_scores(p.ood, bank, *out[name], p.temperature) for name in ("val", "test")}
    thresholds = {m: float(np.quantile(scores["val"][m], 0.99)) for m in METHODS}
    test = scores["test"]
    result = {"own test split (in distribution)": {
        m: {"flag_rate": float((test[m] > thresholds[m]).mean()), "auroc": float("nan")} for m in METHODS}}
    sets = image_sets(p.bundle, root, n_generated=n_generated, per_set=per_set, seed=seed)
    for name, items in tqdm(sets.items(), desc="OOD sets", disable=not progress):
        s = method_scores(p.ood, bank, *_outputs(p, items), p.temperature)
        result[name] = {}
        for m in METHODS:
            y = np.r_[np.zeros(len(test[m])), np.ones(len(s[m]))]
            result[name][m] = {"flag_rate": float((s[m] > thresholds[m]).mean()),
                               "auroc": metrics.roc_auc(y, np.r_[test[m], s[m]])}
    return {"methods": list(METHODS), "thresholds": thresholds, "bank_size": int(len(bank)), "k": 10,
            "threshold_rule": "99th percentile of validation scores", "sets": result,
            "reading": "flag_rate on the own test split is the false-flag cost; on the other sets, the share "
                       "caught; auroc: the score separating the set from the own test split"}


def write(bundle_path: Path, result: dict) -> None:
    audits.store(bundle_path, audits.OOD_SCORES, result)


def run(bundle_path: Path, root: Path | None = None, *, progress: bool = True, **options) -> dict:
    """The audit's one entry: :func:`compare_ood`, stored in the bundle (``metrics.json[ood_compare]``)."""
    from leukoview.primitives import settings

    r = compare_ood(Path(bundle_path), Path(root) if root else settings.data_root(), progress=progress, **options)
    write(bundle_path, r)
    return r
