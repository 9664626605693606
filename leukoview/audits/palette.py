"""A third out-of-distribution check, on the image itself rather than the network's features: are this image's
colours like those of the model's training images?

Some networks' penultimate features (the U-Net-style classifier's, VGG16's) do not separate a chart or a crop of a
portrait from an ALL field: their Mahalanobis and wrong-task flags let a few such pictures through to a verdict,
even after the input gate. This check does not depend on the network: each image is described by its colour
histograms (:func:`leukoview.models.classical.colour_histograms`, 96 numbers, ~0.3 ms), standardised by the own training
split's spread, and scored by its mean Euclidean distance to the ``k`` nearest training images. The flag threshold is
set on the own validation split only (:func:`leukoview.audits.wrongtask.combined_threshold`: its 99.5 % quantile, raised
where needed so that this flag and the bundle's other flags together fire on at most 1.5 % of that split); no
out-of-distribution image is used to fit or set it, so :mod:`leukoview.audits.oodeval`'s rates are on unseen kinds.

It knows one lab's palette: another lab's images, or a segmented cell on black, are flagged under a model that has
it. So it is added to a bundle only on request, ``python -m leukoview palette BUNDLE`` (it writes
``palette.safetensors`` + ``palette.json``), for models trained on one source whose own flags are weak, and
:class:`~leukoview.jobs.predict.Predictor` then flags an image when any check fires. Bundles without it are
unchanged."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from leukoview import audits
from leukoview.models.bundle import PALETTE as FILE
from leukoview.models.classical import colour_histogram_rows
from leukoview.primitives.images import load_image
from leukoview.primitives.ood import knn_distances

QUANTILE, BUDGET, K = 0.995, 0.015, 5


def _load(paths: list[Path], *, progress: str = "") -> list:
    from tqdm import tqdm

    return [load_image(p) for p in tqdm(paths, desc=progress, unit="img", disable=not progress)]


def fit(bundle_path: Path, root: Path, *, k: int = K, quantile: float = QUANTILE, budget: float = BUDGET,
        progress: bool = True) -> dict:
    """Fit the palette check for a bundle from its own train split (reference) and validation split (threshold)
    and write it into the bundle; returns its record (``palette.json``)."""
    from safetensors.numpy import save

    from leukoview.audits.wrongtask import combined_threshold
    from leukoview.jobs.predict import Predictor

    p = Predictor(bundle_path)
    split = p.bundle.split()
    files = {part: [Path(root) / f for f in split.loc[split["split"] == part, "file"]] for part in ("train", "val")}
    if not files["train"] or not files["val"]:
        raise ValueError(f"{bundle_path}: its split has no train or no validation images to fit a palette check on")
    train = colour_histogram_rows(_load(files["train"], progress="own train" if progress else ""))
    mean, scale = train.mean(0), train.std(0) + 1e-3  # the floor: a bin the training images never fill stays finite
    state = {"reference": ((train - mean) / scale).astype(np.float32), "mean": mean, "scale": scale,
             "k": np.array([k])}
    val_images = _load(files["val"], progress="own validation" if progress else "")
    val = colour_histogram_rows(val_images)
    val_d = knn_distances(state, val)
    out = p.outputs(*p.raw_outputs([p.prepare(im) for im in val_images]))  # the other flags on val
    threshold = combined_threshold(val_d, out["ood_flag"], quantile=quantile, budget=budget)
    info = {"method": f"mean distance to the {k} nearest own training images in standardised colour histograms "
                      "(RGB and HSV, 16 bins each, at 64 px): a check of the image, independent of the network",
            "threshold": threshold,
            "threshold_rule": f"the {quantile:.1%} quantile of the own validation split's distances, raised where "
                              f"needed so that this flag and the bundle's other flags together fire on at most "
                              f"{budget:.1%} of that split",
            "reference_images": len(train), "val_images": len(val),
            "val_flag_rate": float((val_d > threshold).mean()),
            "val_combined_flag_rate": float(((val_d > threshold) | out["ood_flag"]).mean())}
    arrays = save({k_: np.asarray(v) for k_, v in state.items()})
    audits.store(p.bundle.path, audits.PALETTE, info, files={FILE: arrays})
    return info


def run(bundle_path: Path, root: Path | None = None, *, progress: bool = True, **options) -> dict:
    """The audit's one entry: :func:`fit` (it stores the check and its record in the bundle)."""
    from leukoview.primitives import settings

    return fit(Path(bundle_path), Path(root) if root else settings.data_root(), progress=progress, **options)
