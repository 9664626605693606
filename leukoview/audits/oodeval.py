"""How well does a bundle's out-of-distribution flag work, and at what cost?

Sets scored with the bundle (every image through :class:`~leukoview.jobs.predict.Predictor`, the flag as shipped):

- *not blood cells*: generated images — random crops of the two photographs shipped with scikit-learn, coloured
  noise, smooth gradients and flat colours, and drawn patterns with text; and two kinds the input gate's rules
  were not set on (:func:`leukoview.primitives.pictures.held_out_non_cells`): crops of matplotlib's sample images and
  charts drawn with it;
- *cells of another dataset*: the test splits of the other datasets under the data root (e.g. wbc5 leukocytes for
  the all4 model) and the C-NMC single cells;
- the bundle's own test split (in distribution): its flag rate is the cost in false flags.

``python -m leukoview oodeval BUNDLE`` stores the result in the bundle's ``metrics.json`` (key ``ood_eval``)
through :func:`leukoview.models.bundle.update`; the comparison page shows it (:func:`leukoview.app.compare.ood_table`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from leukoview.jobs.predict import Predictor
from leukoview.models.bundle import WRONG_TASK_INFO
from leukoview.models.card import Card
from leukoview.models.datasets import DatasetError, load_dataset
from leukoview.primitives.images import load_image
from leukoview.primitives.pictures import held_out_non_cells, not_cells
from leukoview.primitives.segment import smear_gate
from leukoview.primitives.tasks import TASKS


def other_cells(task: str, root: Path, *, per_set: int = 200, seed: int = 0, exclude: set[Path] = frozenset()
                ) -> dict[str, list[Path]]:
    """Files of the other registered datasets found under ``root`` (a sample of ``per_set`` each): those that
    share no images with ``task`` (:meth:`leukoview.primitives.tasks.Task.others`), less the ``exclude``d files
    (absolute paths: those a wrong-task detector was fitted on)."""
    out = {}
    for name in (TASKS[task].others() if task in TASKS else []):
        try:
            ds = load_dataset(name, root)
        except DatasetError:
            continue
        files = ds.manifest["file"]
        if exclude:
            files = files[[(ds.root / f).resolve() not in exclude for f in files]]
        files = files.sample(min(len(files), per_set), random_state=seed)
        out[f"{name} cells (another dataset)"] = [ds.root / f for f in files]
    return out


def held_out_classes(card: Card, root: Path, *, per_set: int = 200, seed: int = 0) -> dict[str, list[Path]]:
    """Images of each class the bundle's training left out (config ``exclude_classes``), one set per class: cell
    types of the same dataset and scanners that the model never saw."""
    excluded = card.config.get("exclude_classes") or []
    if not excluded:
        return {}
    ds = load_dataset(card.task, root)
    sets = {}
    for c in excluded:
        files = ds.manifest.loc[ds.manifest["label"] == c, "file"]
        files = files.sample(min(len(files), per_set), random_state=seed)
        sets[f"held-out class never trained on: {c}"] = [ds.root / f for f in files]
    return sets


def image_sets(b, root: Path, *, n_generated: int = 200, per_set: int = 200, seed: int = 0
               ) -> dict[str, list]:
    """Every set a bundle's OOD flag is judged on: generated non-cells, other tasks' cells, held-out classes."""
    from leukoview.audits.wrongtask import fitted_files

    return {**not_cells(n_generated, seed=seed), **held_out_non_cells(n_generated // 4),
            **other_cells(b.task, root, per_set=per_set, seed=seed, exclude=fitted_files(b, root)),
            **held_out_classes(b.card, root, per_set=per_set, seed=seed)}


def ood_eval(bundle_path: Path, root: Path, *, n_generated: int = 200, per_set: int = 200, seed: int = 0,
             progress: bool = True) -> dict:
    """Per image set: how many images the flag catches, and what the model calls them — the share it calls
    positive (suspicion at or above the shipped threshold) and the most frequent predicted class. For the own
    test split the flag rate is the false-flag cost."""
    p = Predictor(bundle_path)
    b = p.bundle
    test = b.predictions()
    if p.wrong_task is None:  # the stored predictions carry the whole flag
        rows = {"own test split (in distribution)": _set_row(test["ood_score"].to_numpy() > p.ood_threshold,
                                                             test["suspicion"].to_numpy() >= p.threshold,
                                                             test["predicted"].tolist())}
        sets = {}
    else:  # the wrong-task check came after training: rescore the test split with the flag as shipped
        rows = {}
        sets = {"own test split (in distribution)": [Path(root) / f for f in test["file"]]}
    sets.update(image_sets(b, root, n_generated=n_generated, per_set=per_set, seed=seed))
    for name, items in tqdm(sets.items(), desc="OOD sets", disable=not progress):
        flags, positive, predicted, gated = [], [], [], []
        for i in range(0, len(items), 32):
            chunk = [load_image(x) if isinstance(x, Path) else x for x in items[i:i + 32]]
            out = p.predict_batch(chunk)
            flags.append(out["ood_flag"])
            positive.append(out["decision"])
            predicted += [p.classes[k] for k in out["probs"].argmax(1)]
            gated += [bool(smear_gate(im)) for im in chunk]
        rows[name] = _set_row(np.concatenate(flags) if flags else np.zeros(0, bool),
                              np.concatenate(positive) if positive else np.zeros(0, bool), predicted,
                              gated=np.asarray(gated, bool))
    return {"threshold": p.ood_threshold, "seed": seed, "sets": rows,
            "wrong_task": (b.json_file(WRONG_TASK_INFO) or {}).get("method", "none"),
            "reading": "flag_rate on the own test split is the false-flag cost; on the other sets, the share "
                       "caught. called_positive: share the model calls positive at its shipped threshold"}


def _set_row(flags: np.ndarray, positive: np.ndarray, predicted: list[str], *, gated: np.ndarray | None = None
             ) -> dict:
    """Counts of one set. ``gated``: refused by the input gate before any model (they get no verdict, so they
    count neither as flagged-or-not positives nor as verdicts); ``verdicts``: images that would get a
    positive/negative decision (neither gated nor flagged) — on a set from outside the model's world, each is a
    reassurance or an alarm it should not give."""
    n = len(flags)
    gated = np.zeros(n, bool) if gated is None else gated
    counts = pd.Series(predicted, dtype=object).value_counts()
    return {"images": int(n), "flagged": int(flags.sum()), "flag_rate": float(flags.mean()) if n else float("nan"),
            "gated": int(gated.sum()), "gated_or_flagged": int((gated | flags).sum()),
            "verdicts": int((~gated & ~flags).sum()),
            "called_positive": int(positive.sum()),
            "called_positive_rate": float(positive.mean()) if n else float("nan"),
            "called_positive_unflagged": int((positive & ~flags & ~gated).sum()),
            "predicted_counts": {str(k): int(v) for k, v in counts.items()}}


def run(bundle_path: Path, root: Path | None = None, *, progress: bool = True, **options) -> dict:
    """The audit's one entry: :func:`ood_eval`, stored in the bundle (``metrics.json[ood_eval]``)."""
    from leukoview import audits
    from leukoview.primitives import settings

    r = ood_eval(Path(bundle_path), Path(root) if root else settings.data_root(), progress=progress, **options)
    audits.store(bundle_path, audits.OOD_EVAL, r)
    return r
