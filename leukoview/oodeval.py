"""How well does a bundle's out-of-distribution flag work, and at what cost?

Sets scored with the bundle (every image through :class:`~leukoview.predict.Predictor`, the flag as shipped):

- *not blood cells*: generated images — random crops of the two photographs shipped with scikit-learn, coloured
  noise, smooth gradients and flat colours, and drawn patterns with text; and two kinds the input gate's rules
  were not set on (:func:`held_out_non_cells`): crops of matplotlib's sample images and charts drawn with it;
- *cells of another dataset*: the test splits of the other datasets under the data root (e.g. wbc5 leukocytes for
  the all4 model) and the C-NMC single cells;
- the bundle's own test split (in distribution): its flag rate is the cost in false flags.

``python -m leukoview oodeval BUNDLE`` stores the result in the bundle's ``metrics.json`` (key ``ood_eval``)
through :func:`leukoview.bundle.update`; the comparison page shows it (:func:`leukoview.compare.ood_table`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from tqdm import tqdm

from .bundle import WRONG_TASK_INFO
from .card import Card
from .datasets import DatasetError, load_dataset
from .images import load_image
from .predict import Predictor
from .segment import smear_gate
from .tasks import TASKS


def not_cells(n: int = 200, *, size: int = 224, seed: int = 0) -> dict[str, list[Image.Image]]:
    """Four families of generated non-cell images, ``n // 4`` each."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    k = n // 4
    photos = load_sample_images().images
    crops = []
    for i in range(k):
        ph = photos[i % len(photos)]
        side = int(rng.integers(size // 2, min(ph.shape[:2])))
        y, x = rng.integers(0, ph.shape[0] - side), rng.integers(0, ph.shape[1] - side)
        crops.append(Image.fromarray(ph[y:y + side, x:x + side]).resize((size, size)))
    noise = [Image.fromarray(np.clip(rng.normal(rng.uniform(40, 220, 3), rng.uniform(10, 80), (size, size, 3)), 0,
                                     255).astype(np.uint8)) for _ in range(k)]
    smooth = []
    yy, xx = np.mgrid[:size, :size] / size
    for _ in range(k):
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))[..., None]
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        smooth.append(Image.fromarray((a * (1 - t) + b * t).astype(np.uint8)))
    drawn = []
    for i in range(k):
        img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.uniform(150, 255, 3)))
        d = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(3, 12))):
            box = sorted(rng.integers(0, size, 2)), sorted(rng.integers(0, size, 2))
            d.rectangle([box[0][0], box[1][0], box[0][1], box[1][1]], outline=tuple(rng.integers(0, 255, 3)),
                        width=int(rng.integers(1, 6)))
        d.text((10, size // 2), f"REPORT {i:03d} — not a cell", fill=(0, 0, 0))
        drawn.append(img)
    return {"photographs (crops)": crops, "coloured noise": noise, "gradients and flat colours": smooth,
            "drawn shapes and text": drawn}


def held_out_non_cells(n: int, *, size: int = 224, seed: int = 7) -> dict[str, list[Image.Image]]:
    """Non-smear images of kinds the gate's rules were not designed on: random crops of matplotlib's sample images
    (a portrait, a product photo, a logo) and charts drawn with matplotlib, each ``n``: the far-OOD sets that test
    whether the input gate's rules, set while looking at :func:`not_cells`, hold on other kinds of picture."""
    import io

    import matplotlib
    from matplotlib import cbook

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    photos = [Image.open(cbook.get_sample_data(f)).convert("RGB")
              for f in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")]
    crops = []
    for i in range(n):
        ph = photos[i % len(photos)]
        side = int(rng.integers(min(ph.size) // 3, min(ph.size)))
        x, y = int(rng.integers(0, ph.width - side + 1)), int(rng.integers(0, ph.height - side + 1))
        crops.append(ph.crop((x, y, x + side, y + side)).resize((size, size)))
    charts = []
    for _ in range(n):
        fig, ax = plt.subplots(figsize=(3, 3), dpi=75)
        kind = int(rng.integers(3))
        data = rng.normal(size=(30, 2)).cumsum(0)
        if kind == 0:
            ax.plot(data, color=tuple(rng.uniform(0, 1, 3)))
        elif kind == 1:
            ax.bar(range(8), rng.uniform(1, 5, 8), color=tuple(rng.uniform(0, 1, 3)))
        else:
            ax.imshow(rng.normal(size=(16, 16)).cumsum(0), cmap=str(rng.choice(["viridis", "plasma", "magma"])))
        ax.set_title("Figure")
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        charts.append(Image.open(buf).convert("RGB").resize((size, size)))
    return {"matplotlib sample photos (crops)": crops, "matplotlib charts": charts}


def other_cells(task: str, root: Path, *, per_set: int = 200, seed: int = 0, exclude: set[Path] = frozenset()
                ) -> dict[str, list[Path]]:
    """Files of the other registered datasets found under ``root`` (a sample of ``per_set`` each): those that
    share no images with ``task`` (:meth:`leukoview.tasks.Task.others`), less the ``exclude``d files (absolute
    paths: those a wrong-task detector was fitted on)."""
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
    from .wrongtask import fitted_files

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
