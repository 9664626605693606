"""Site adaptation: a laboratory's confirmed cells teach a bundle its look, measured on cells it held back.

``python -m leukoview adapt --bundle B --site NAME (--folder DIR | --from-reviews) --out DIR``:

1. The site's labelled cells (a class-per-folder directory, or the reviewed cells of signed-off slides in the
   review store) are split into an *adapt* part and an *evaluate* part: by slide or patient when they carry one
   (never one on both sides), else stratified by type; seeded.
2. The cheapest adaptation that works: the network stays as it is; its classifier head is refitted (a multinomial
   logistic regression on the penultimate features) on the base training split's features mixed with the site's
   adapt cells, each site type weighted as much as a base type. The temperature and the sensitivity-first
   threshold are refitted on the base validation split (the site's evaluate part is never used to fit anything);
   the OOD detector is refitted on the base training features plus the site's adapt cells, its threshold on base
   validation; a wrong-task detector's threshold is raised so the site's adapt cells pass it.
3. The new bundle records the base bundle and its sha256, the site, the cells per type used, the split of the
   site's cells, and base-vs-adapted results on the evaluate part with intervals; it is marked *not recommended*
   when it is not better there. The base bundle is never changed; a bundle without adaptation works as before.

Base-split features are cached per bundle (``LEUKOVIEW_CACHE_DIR``), so a second adaptation of a bundle costs only
the site's cells.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from leukoview.jobs.evaluate import evaluate, predictions_frame
from leukoview.jobs.site_cells import MIN_PER_TYPE, AdaptError, counts_per_type, in_parts
from leukoview.models import bundle
from leukoview.primitives import metrics, settings
from leukoview.primitives.calibration import fit_temperature, softmax
from leukoview.primitives.ood import fit_ood, ood_scores

BASE_PER_CLASS = 300  # base training cells per class in the head's refit (a balanced sample)
ProgressFn = Callable[[float, str], None]


@dataclass
class Features:
    logits: np.ndarray
    feats: np.ndarray


# --------------------------------------------------------------------------------------------- features


def image_features(predictor, files: list, *, progress: ProgressFn | None = None, what: str = "") -> Features:
    """Logits and penultimate features of image files through the predictor's own preprocessing."""
    return Features(*predictor.raw_outputs_of(
        files, on_batch=(lambda done, total: progress(done / max(total, 1), what)) if progress else None))


def base_features(b, predictor, root: Path, *, progress: ProgressFn | None = None) -> dict[str, Features]:
    """Features of the bundle's saved train / val / test split, cached by the weights' sha256."""
    cache = settings.cache_dir() / f"adapt-features-{b.card.weights_sha256[:16]}.npz"
    split = b.split()
    if cache.is_file():
        data = np.load(cache)
        if all(f"{p}_feats" in data and len(data[f"{p}_feats"]) == int((split["split"] == p).sum())
               for p in ("train", "val", "test")):
            return {p: Features(data[f"{p}_logits"], data[f"{p}_feats"]) for p in ("train", "val", "test")}
    out = {}
    for part in ("train", "val", "test"):
        files = [root / f for f in split.loc[split["split"] == part, "file"]]
        out[part] = image_features(predictor, files, progress=progress, what=f"base {part} split")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **{f"{p}_{k}": getattr(f, k) for p, f in out.items() for k in ("logits", "feats")})
    except OSError:
        pass  # the cache only saves time
    return out


# --------------------------------------------------------------------------------------------- the head


def refit_head(x_base: np.ndarray, y_base: np.ndarray, x_site: np.ndarray, y_site: np.ndarray, n_classes: int, *,
               seed: int = 0, c: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A linear head (weights, bias) over raw penultimate features: a multinomial logistic regression on the base
    cells and the site's, each site type weighted as much as a base type of the same class."""
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([x_base, x_site]).astype(np.float64)
    y = np.concatenate([y_base, y_site])
    w = np.ones(len(x))
    base_per = np.bincount(y_base, minlength=n_classes).astype(float)
    site_per = np.bincount(y_site, minlength=n_classes).astype(float)
    for k in range(n_classes):
        if site_per[k]:
            w[len(x_base):][y_site == k] = max(base_per[k], site_per[k]) / site_per[k]
    mean, std = x.mean(0), x.std(0) + 1e-6
    lr = LogisticRegression(C=c, max_iter=3000, random_state=seed)
    lr.fit((x - mean) / std, y, sample_weight=w)
    coef = np.zeros((n_classes, x.shape[1]))
    bias = np.zeros(n_classes)
    present = lr.classes_
    coef[present] = lr.coef_ if len(present) > 2 else np.vstack([-lr.coef_[0], lr.coef_[0]]) / 2
    bias[present] = lr.intercept_ if len(present) > 2 else np.array([-lr.intercept_[0], lr.intercept_[0]]) / 2
    if len(present) < n_classes:
        bias[np.setdiff1d(np.arange(n_classes), present)] = -1e3  # a class with no cells is never called
    weights = coef / std  # fold the standardisation into the layer
    return weights.astype(np.float32), (bias - (coef * mean / std).sum(1)).astype(np.float32)


def _balanced_sample(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    keep = []
    for k in np.unique(y):
        idx = np.flatnonzero(y == k)
        keep.append(idx if len(idx) <= per_class else rng.choice(idx, per_class, replace=False))
    return np.sort(np.concatenate(keep))


# --------------------------------------------------------------------------------------------- evaluation


def site_result(probs: np.ndarray, flags: np.ndarray, y: np.ndarray, classes: list[str], positive: list[str],
                threshold: float, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """How a model reads the site's evaluate cells: own type per type and balanced (with intervals), positive
    decisions among the normal cells, and those with no flag."""
    pos_idx = [classes.index(c) for c in positive]
    called = probs.argmax(1)
    suspicion = probs[:, pos_idx].sum(1)
    normal = ~np.isin(y, pos_idx)
    positive_call = (suspicion >= threshold) & ~flags

    per_type = {}
    for k in np.unique(y):
        m = y == k
        hits = (called[m] == k).astype(float)
        lo, hi = metrics.bootstrap_ci(lambda i, h=hits: float(h[i].mean()), len(hits), n_boot=n_boot, seed=seed)
        per_type[classes[k]] = {"cells": int(m.sum()), "own_type": float(hits.mean()), "ci95": [lo, hi]}
    bal = float(np.mean([v["own_type"] for v in per_type.values()]))
    out = {"cells": int(len(y)), "own_type": per_type, "balanced_own_type": bal,
           "flagged": float(flags.mean()) if len(flags) else float("nan")}
    if normal.any():
        pos = (suspicion[normal] >= threshold).astype(float)
        unflagged = ((suspicion[normal] >= threshold) & ~flags[normal]).astype(float)
        lo, hi = metrics.bootstrap_ci(lambda i: float(pos[i].mean()), len(pos), n_boot=n_boot, seed=seed)
        out["positive_among_normal"] = {"rate": float(pos.mean()), "count": int(pos.sum()), "of": int(len(pos)),
                                        "ci95": [lo, hi]}
        out["positive_unflagged_among_normal"] = {"rate": float(unflagged.mean()), "count": int(unflagged.sum()),
                                                  "of": int(len(pos))}
    if (~normal).any():
        out["positive_cells_called_positive"] = float(positive_call[~normal].mean())
    return out


def better(base: dict, adapted: dict) -> tuple[bool, str]:
    """Whether the adapted model is better on the evaluate part: balanced own type up and false alarms not up."""
    up = adapted["balanced_own_type"] - base["balanced_own_type"]
    fa_base = (base.get("positive_among_normal") or {}).get("rate", 0.0)
    fa_new = (adapted.get("positive_among_normal") or {}).get("rate", 0.0)
    ok = up > 0 and fa_new <= fa_base + 1e-9
    why = (f"balanced own type {base['balanced_own_type']:.3f} -> {adapted['balanced_own_type']:.3f}; normal cells "
           f"called positive {fa_base:.1%} -> {fa_new:.1%}")
    return ok, why


# --------------------------------------------------------------------------------------------- the whole step


def adapt(bundle_path: Path | str, cells: pd.DataFrame, *, site: str, out: Path | str, root: Path | None = None,
          seed: int = 0, min_per_type: int = MIN_PER_TYPE, n_boot: int = 1000, source: str = "folder",
          progress: ProgressFn | None = None) -> Path:
    """Adapt the bundle at ``bundle_path`` to the site's labelled ``cells`` (columns file, label, group) and write
    the adapted bundle to ``out``. Returns ``out``."""
    import torch

    from leukoview.jobs.predict import Predictor

    base = bundle.load_bundle(bundle_path)
    out = Path(out)
    if not base.is_network:
        raise AdaptError(f"{base.id} is a classical model: adaptation refits a network's classifier head")
    if out.resolve() == Path(bundle_path).resolve():
        raise AdaptError("write the adapted bundle to another folder: the base bundle is never changed")
    if not site.strip() or not all(ch.isalnum() or ch in "_-" for ch in site):
        raise AdaptError(f"site name {site!r}: letters, digits, '-' and '_' only")
    cells = in_parts(cells, base.classes, min_per_type=min_per_type, seed=seed, model=base.id)
    root = Path(root) if root else settings.data_root()
    say = progress or (lambda f, what: None)
    predictor = Predictor(base, backend="torch")
    feats = base_features(base, predictor, root, progress=say)
    split = base.split()
    index = {c: i for i, c in enumerate(base.classes)}
    y = {p: split.loc[split["split"] == p, "label"].map(index).to_numpy() for p in ("train", "val", "test")}
    adapt_part, eval_part = cells[cells["part"] == "adapt"], cells[cells["part"] == "evaluate"]
    site_a = image_features(predictor, adapt_part["file"].tolist(), progress=say, what="site cells (adapt)")
    site_e = image_features(predictor, eval_part["file"].tolist(), progress=say, what="site cells (evaluate)")
    ya, ye = adapt_part["label"].map(index).to_numpy(), eval_part["label"].map(index).to_numpy()
    keep = _balanced_sample(y["train"], BASE_PER_CLASS, seed)
    weight, bias = refit_head(feats["train"].feats[keep], y["train"][keep], site_a.feats, ya, len(base.classes),
                              seed=seed)
    weight, bias = (a.astype(np.float16).astype(np.float32) for a in (weight, bias))  # the fp16 that ships

    def logits(f: np.ndarray) -> np.ndarray:
        return f.astype(np.float32) @ weight.T + bias

    temperature = fit_temperature(logits(feats["val"].feats), y["val"])
    val_probs = softmax(logits(feats["val"].feats), temperature)
    positive = base.positive
    pos_idx = [index[c] for c in positive]
    ybin_val = np.isin(y["val"], pos_idx).astype(int)
    chosen = metrics.choose_threshold(ybin_val, val_probs[:, pos_idx].sum(1),
                                      min_specificity=float(base.card.config.get("min_specificity", 0.98)))
    ood_state, ood_threshold = fit_ood(np.concatenate([feats["train"].feats, site_a.feats]),
                                       np.concatenate([y["train"], ya]), feats["val"].feats,
                                       components=int(base.card.config.get("ood_components", 64)))
    say(1.0, "evaluating")

    wrong = base.wrong_task()
    new_wrong = _raised_wrong_task(wrong, site_a.feats)
    base_eval = site_result(softmax(site_e.logits, base.card.temperature),
                            _flags(site_e.feats, predictor.ood, base.card.ood_threshold, wrong), ye, base.classes,
                            positive, base.threshold, n_boot=n_boot, seed=seed)
    new_eval = site_result(softmax(logits(site_e.feats), temperature),
                           _flags(site_e.feats, ood_state, ood_threshold, new_wrong), ye, base.classes, positive,
                           chosen["threshold"], n_boot=n_boot, seed=seed)
    recommended, why = better(base_eval, new_eval)

    test_frame, val_frame = _own_split_frames(split, base, feats, logits, temperature, val_probs, ood_state)
    test_metrics = evaluate(test_frame, base.classes, positive, chosen["threshold"], n_boot=n_boot, seed=seed)
    test_metrics["ood_flag_rate_test"] = float(np.mean(test_frame["ood_score"] > ood_threshold))

    record = _record(base, site=site, source=source, adapt_part=adapt_part, eval_part=eval_part, cells=cells,
                     seed=seed, evaluation={"base": base_eval, "adapted": new_eval}, recommended=recommended, why=why)
    return _write(base, out, weight=weight, bias=bias, temperature=temperature, chosen=chosen, ood=(ood_state,
                  ood_threshold), wrong=new_wrong, test_frame=test_frame, val_frame=val_frame,
                  test_metrics=test_metrics, record=record, site_cells=cells, torch=torch)


def _write(base, out: Path, *, weight, bias, temperature, chosen, ood, wrong, test_frame, val_frame, test_metrics,
           record, site_cells, torch) -> Path:
    """The adapted bundle: the base bundle's files, the new head, calibration, threshold, OOD detector, test
    predictions and metrics; stale audit results dropped; the site's adapt cells added to training membership."""
    from safetensors.numpy import save_file

    from leukoview.models.seen import seen_table
    from leukoview.models.splits import file_hashes

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(base.path, out)
    model = base.build_model()
    layer = model.get_submodule(base.card.classifier)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight))
        layer.bias.copy_(torch.from_numpy(bias))
    bundle.save_weights(model, out / bundle.WEIGHTS)
    save_file({k: np.ascontiguousarray(v) for k, v in ood[0].items()}, str(out / bundle.OOD))
    test_frame.to_csv(out / bundle.PREDICTIONS, index=False)
    val_frame.to_csv(out / bundle.VAL_PREDICTIONS, index=False)
    for stale in (bundle.CAM_STATS, bundle.LATENCY, bundle.PALETTE_INFO):  # audits measured on the base model
        (out / stale).unlink(missing_ok=True)
    (out / bundle.PALETTE).unlink(missing_ok=True)
    if wrong is not None:
        info = json.loads((out / bundle.WRONG_TASK_INFO).read_text())
        info.update(threshold=wrong[1], threshold_note="raised so that the site's adapt cells pass it")
        bundle.write_json(out / bundle.WRONG_TASK_INFO, info)
    seen_path = out / bundle.SEEN
    if seen_path.is_file():
        seen = json.loads(seen_path.read_text())
        files = site_cells.loc[site_cells["part"] == "adapt", "file"].tolist()
        hashes = pd.DataFrame([(f, *file_hashes(Path(f))) for f in files], columns=["file", "sha256", "phash"])
        added = seen_table(pd.DataFrame({"file": files, "split": "train"}), hashes, seen["near_bits"])
        for key in ("split", "sha256", "phash"):  # the same entries training writes for its own images
            seen[key] += added[key]
        bundle.write_json(seen_path, seen)
    bundle.write_json(out / bundle.METRICS, test_metrics)
    bundle.write_json(out / "site_cells.json", {"cells": site_cells.assign(file=[Path(f).name for f in
                                                                              site_cells["file"]]).to_dict("records")})
    raw = {k: v for k, v in base.card.raw.items() if k not in ("files", "format", "card_sha256")}
    raw.update(id=out.name, threshold=chosen["threshold"], threshold_rule=chosen["rule"], temperature=temperature,
               adapted=record)
    raw["ood"] = {**raw.get("ood", {}), "threshold": ood[1],
                  "threshold_rule": "99th percentile of base validation scores (detector fitted on base train + site "
                                    "adapt cells)"}
    raw["threshold_validation"] = {k: chosen[k] for k in ("val_sensitivity", "val_specificity") if k in chosen}
    bundle.finalize(out, raw)
    return out


def _flags(f: np.ndarray, state, threshold: float, wrong) -> np.ndarray:
    """The OOD flag of features: the Mahalanobis detector, and the wrong-task detector when there is one."""
    flag = ood_scores(state, f) > threshold
    if wrong is not None:
        from leukoview.primitives.ood import linear_scores

        flag |= linear_scores(wrong[0], f) > wrong[1]
    return flag


def _raised_wrong_task(wrong, site_feats: np.ndarray):
    """A wrong-task detector with its threshold raised so that 99% of the site's adapt cells pass it."""
    if wrong is None:
        return None
    from leukoview.primitives.ood import linear_scores

    scores = linear_scores(wrong[0], site_feats)
    return wrong[0], float(max(wrong[1], np.quantile(scores, 0.99) if len(scores) else wrong[1]))


def _own_split_frames(split, base, feats: dict, logits, temperature: float, val_probs, ood_state):
    """The base model's own test and validation predictions, read by the adapted head (the test split must stay
    within its intervals)."""
    test_rows = split[split["split"] == "test"]
    test_probs = softmax(logits(feats["test"].feats), temperature)
    test_frame = predictions_frame(test_rows["file"], test_rows["label"], test_probs, base.classes, base.positive,
                                   patients=test_rows["patient"].astype(str) if (test_rows["patient"] != "").any()
                                   else None, groups=test_rows["group"],
                                   ood=ood_scores(ood_state, feats["test"].feats),
                                   sources=test_rows["source"] if "source" in test_rows else None)
    val_rows = split[split["split"] == "val"]
    val_frame = predictions_frame(val_rows["file"], val_rows["label"], val_probs, base.classes, base.positive,
                                  groups=val_rows["group"], ood=ood_scores(ood_state, feats["val"].feats),
                                  sources=val_rows["source"] if "source" in val_rows else None)
    return test_frame, val_frame


def _record(base, *, site: str, source: str, adapt_part, eval_part, cells, seed: int, evaluation: dict,
            recommended: bool, why: str) -> dict:
    """The adapted card's ``adapted`` entry: the base and its sha256, the site, the cells used and checked, the
    results on the held-out part, and the verdict."""
    return {
        "site": site, "source": source, "method": "classifier head refitted (logistic regression on the frozen "
        "network's penultimate features: the base training split, at most "
        f"{BASE_PER_CLASS} a class, and the site's adapt cells, each site type weighted as a base type); "
        "temperature and threshold on base validation; OOD detector on base train + site adapt cells",
        "base": {"id": base.id, "weights_sha256": base.card.weights_sha256, "card_sha256": base.card.raw.get(
            "card_sha256", "")},
        "cells_used": counts_per_type(adapt_part, base.classes), "cells_evaluated": counts_per_type(
            eval_part, base.classes),
        "split": "by slide or patient" if (cells["group"].astype(str) != "").any() else "stratified by type",
        "seed": seed, "evaluation": evaluation, "recommended": recommended,
        "verdict": ("better than the base model on the site's held-out cells: " if recommended else
                    "NOT better than the base model on the site's held-out cells (not recommended): ") + why,
        "created": datetime.now(UTC).isoformat(timespec="seconds")}
