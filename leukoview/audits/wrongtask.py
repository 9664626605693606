"""A second out-of-distribution check, for the wrong task: is this image of the kind the model was trained on, or
a cell of another registered task (leukocyte crops under the ALL model, ALL fields under the leukocyte model)?

The Mahalanobis flag (:mod:`leukoview.primitives.ood`) only knows the model's own training data; it let through 34.5 %
of ALL fields under the 9-type leukocyte model. This detector also sees examples of the other tasks: a logistic
regression on the model's standardised penultimate features, own train split (in distribution) against a sample of the
other registered datasets' images (wrong task), its flag threshold the 99th percentile of the own validation split's
scores (about 1 % false flags). C-NMC cells are never used in fitting: they stay a wrong-task set the detector has
not seen. The files used are recorded (``wrong_task.json``), and :mod:`leukoview.audits.oodeval` leaves them out of its
sets, so every rate it reports is on images the detector was not fitted on.

``python -m leukoview wrongtask BUNDLE`` fits it and adds ``wrong_task.safetensors`` + ``wrong_task.json`` to the
bundle (:func:`leukoview.models.bundle.update`); :class:`~leukoview.jobs.predict.Predictor` then flags an image when
either check fires. Bundles without it keep the Mahalanobis flag alone."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from leukoview import audits
from leukoview.models.bundle import WRONG_TASK as FILE
from leukoview.models.bundle import WRONG_TASK_INFO as INFO
from leukoview.models.datasets import DatasetError, load_dataset
from leukoview.primitives.ood import linear_scores as scores
from leukoview.primitives.ood import ood_scores
from leukoview.primitives.pictures import not_cells
from leukoview.primitives.tasks import TASKS

NEVER_FITTED = ("cnmc",)  # kept unseen: the probe of whether the detector generalises to a wrong task it never saw


def features(p, paths: list, *, progress: str = "", render=None) -> np.ndarray:
    """Penultimate features of image files (or already decoded PIL images) through the predictor's own
    preprocessing (cell-level models: the mean over each image's cells, as the predictor uses them); ``render``: a
    change made to each image first."""
    from tqdm import tqdm

    with tqdm(total=len(paths), desc=progress, unit="img", disable=not progress) as bar:
        return p.raw_outputs_of(paths, render=render, on_batch=lambda done, _: bar.update(done - bar.n))[1]


def isolated(img):
    """The image's cells kept by leukoview's own segmentation, everything else black: cells as an isolated-cell
    acquisition shows them (segmented cells on black), which no registered task trains on."""
    from leukoview.primitives.augment import replace_background

    return replace_background(img, np.zeros(3))


def negatives(task: str, root: Path, *, per_dataset: int = 1000, seed: int = 0) -> list[Path]:
    """A sample of the other registered datasets' images (those sharing no image with ``task``; C-NMC left out)."""
    chosen: dict[str, Path] = {}
    for name in TASKS[task].others() if task in TASKS else []:
        if name in NEVER_FITTED:
            continue
        try:
            ds = load_dataset(name, root)
        except DatasetError:
            continue
        files = ds.manifest["file"].sample(min(len(ds.manifest), per_dataset), random_state=seed)
        for f in files:
            path = (ds.root / f).resolve()
            chosen[str(path)] = path
    return list(chosen.values())


def fit(bundle_path: Path, root: Path, *, per_dataset: int = 1000, own: int = 2000, seed: int = 0,
        quantile: float = 0.99, budget: float = 0.015, wrong: list[Path] | None = None, isolated_renders: int = 0,
        generated: dict | None = None, progress: bool = True) -> dict:
    """Fit the detector for a bundle and write it into the bundle; returns its record (``wrong_task.json``).
    ``wrong``: the wrong-task images to fit on (default: :func:`negatives`); ``isolated_renders``: that many of
    them, and as many of the own training images not used as in-distribution examples, also shown to it as
    :func:`isolated` renders (cells on black), a wrong acquisition; ``generated``: ``{kind: [PIL images]}`` of
    non-smear pictures also shown to it as wrong (the command line passes
    :func:`leukoview.primitives.pictures.not_cells` with another seed than the evaluation's). The threshold:
    :func:`combined_threshold`."""
    from safetensors.numpy import save

    from leukoview.jobs.predict import Predictor

    p = Predictor(bundle_path)
    b = p.bundle
    task = b.task
    split = b.split()
    data_root = Path(root)
    rng = np.random.default_rng(seed)

    def own_files(part: str, limit: int) -> list[Path]:
        files = split.loc[split["split"] == part, "file"].tolist()
        if limit and len(files) > limit:
            files = [files[i] for i in sorted(rng.choice(len(files), limit, replace=False))]
        return [data_root / f for f in files]

    wrong = [Path(w) for w in wrong] if wrong is not None else negatives(task, data_root, per_dataset=per_dataset,
                                                                         seed=seed)
    if not wrong:
        raise ValueError(f"no other registered dataset under {data_root} to fit a wrong-task detector for {task!r}")
    train_files = own_files("train", 0)
    x_in_files = [train_files[i] for i in sorted(rng.choice(len(train_files), min(own, len(train_files)),
                                                            replace=False))] if own else train_files
    x_in = features(p, x_in_files, progress="own train" if progress else "")
    x_out = features(p, wrong, progress="other tasks" if progress else "")
    rendered: list[Path] = []
    if isolated_renders:
        rest = sorted(set(train_files) - set(x_in_files)) or train_files
        pick = rng.permutation(len(wrong))[:isolated_renders].tolist()
        own_pick = rng.permutation(len(rest))[:isolated_renders].tolist()
        rendered = [wrong[i] for i in pick] + [rest[i] for i in own_pick]
        x_out = np.concatenate([x_out, features(p, rendered, render=isolated,
                                                progress="isolated renders" if progress else "")])
    pictures = [im for ims in (generated or {}).values() for im in ims]
    if pictures:
        x_out = np.concatenate([x_out, features(p, pictures, progress="generated pictures" if progress else "")])
    x_val = features(p, own_files("val", 0), progress="own validation" if progress else "")
    state, fit_accuracy = _fit_state(x_in, x_out)
    val_scores = scores(state, x_val)
    maha = (ood_scores(p.ood, x_val) > p.ood_threshold) if p.ood is not None else np.zeros(len(x_val), bool)
    threshold = combined_threshold(val_scores, maha, quantile=quantile, budget=budget)
    info = {"method": "logistic regression (C 0.1, balanced) on standardised penultimate features: own train "
                      "split vs other registered datasets' images",
            "threshold": threshold,
            "threshold_rule": f"the {quantile:.0%} quantile of the own validation split's scores, raised where needed "
                              f"so that this flag or the Mahalanobis flag fires on at most {budget:.1%} of that split",
            "own_train_images": len(x_in), "wrong_task_images": len(x_out),
            "wrong_task_datasets": sorted({n for n in TASKS[task].others() if n not in NEVER_FITTED})
            if task in TASKS else [],
            "never_fitted": list(NEVER_FITTED),
            "fitted_files": _relative(wrong, data_root),
            "isolated_renders": {"images": len(rendered), "how": "cells kept by leukoview's segmentation, the "
                                 "rest black (wrongtask.isolated), of other-task and own training images",
                                 "files": _relative(rendered, data_root)}
            if rendered else None,
            "generated": {"images": len(pictures), "kinds": sorted(generated)} if pictures else None,
            "fit_accuracy": fit_accuracy,
            "val_flag_rate": float((val_scores > threshold).mean()),
            "val_combined_flag_rate": float(((val_scores > threshold) | maha).mean()), "seed": seed}
    audits.store(b.path, audits.WRONG_TASK, info, files={FILE: save(state)})
    return info


def _fit_state(x_in: np.ndarray, x_out: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
    """The detector (standardisation and a balanced logistic regression, own 0 vs wrong 1) as arrays, and its
    accuracy on what it was fitted on."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = np.concatenate([x_in, x_out]), np.r_[np.zeros(len(x_in)), np.ones(len(x_out))]
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=0.1, class_weight="balanced", max_iter=3000).fit(scaler.transform(x), y)
    state = {"mean": scaler.mean_.astype(np.float32), "scale": scaler.scale_.astype(np.float32),
             "coef": clf.coef_[0].astype(np.float32), "intercept": clf.intercept_.astype(np.float32)}
    return state, float(clf.score(scaler.transform(x), y))


def _relative(files: list[Path], root: Path) -> list[str]:
    """The files under ``root``, as sorted paths relative to it (what a record may name)."""
    root = root.resolve()
    return sorted(str(f.resolve().relative_to(root)) for f in files if f.resolve().is_relative_to(root))


def combined_threshold(val_scores: np.ndarray, other_flag: np.ndarray, *, quantile: float = 0.99,
                       budget: float = 0.015) -> float:
    """The detector's threshold from the own validation split: its ``quantile`` of ``val_scores``, raised (never
    lowered) to the lowest score at which the detector's flag together with the other check's (``other_flag``,
    the Mahalanobis flag) fires on at most ``budget`` of the split; when the other check alone exceeds the budget,
    the detector flags no validation image. The two flags' false alarms add up: the budget bounds their sum."""
    base = float(np.quantile(val_scores, quantile))
    if ((val_scores > base) | other_flag).mean() <= budget:
        return base
    for t in np.sort(val_scores[val_scores > base]):  # each candidate: flag what lies strictly above it
        if ((val_scores > t) | other_flag).mean() <= budget:
            return float(t)
    return float(val_scores.max())


def fitted_files(b, root: Path) -> set[Path]:
    """Absolute paths of the images a bundle's detector was fitted on (empty without one)."""
    info = b.json_file(INFO) or {}
    return {(Path(root) / f).resolve() for f in info.get("fitted_files", [])}


GENERATED_SEED = 101  # its generated non-smear pictures: not oodeval's seed (0), so the evaluation's stay unseen


def run(bundle_path: Path, root: Path | None = None, *, generated: int = 0, progress: bool = True, **options) -> dict:
    """The audit's one entry: :func:`fit` (it stores the detector and its record in the bundle). ``generated``:
    that many of :func:`leukoview.primitives.pictures.not_cells` (another seed than the evaluation's) also shown to it
    as wrong."""
    from leukoview.primitives import settings

    pictures = not_cells(generated, seed=GENERATED_SEED) if generated else None
    return fit(Path(bundle_path), Path(root) if root else settings.data_root(), generated=pictures,
               progress=progress, **options)
