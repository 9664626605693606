"""The field head of a cell-level model: the classifier refitted on each training image's mean cell features
(:func:`fit_field_head`)."""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from leukoview.jobs.bundle_writer import improves
from leukoview.jobs.rundata import Run, infer
from leukoview.models.transforms import cell_level
from leukoview.primitives.augment import BackgroundSwap
from leukoview.primitives.calibration import fit_temperature, nll, softmax

FIELD_HEAD_C = (0.001, 0.01, 0.1, 1.0)


def fit_field_head(run: Run, model: nn.Module, *, progress: bool) -> dict:
    """Refit a cell-level model's classifier (a linear layer) on whole images: a logistic regression of each
    training image's label on the mean penultimate features of its cells, the network frozen.

    Training gives the network one cell of an image at a time, with the image's label, but an image is scored by
    the mean of its cells' logits. A linear classifier of the mean features *is* the mean of the cells' logits, so
    the refitted head is scored exactly as before (every path, ONNX included, is unchanged); it is trained on what
    is scored. Features are standardised on train; the strength is chosen from :data:`FIELD_HEAD_C` by the
    temperature-calibrated validation NLL (the epoch-selection criterion); the head is folded back into the
    layer's weight and bias. Returns what the card records."""
    from sklearn.linear_model import LogisticRegression

    if not cell_level(run.spec):
        raise ValueError("field_head applies to cell-level models (locate_method: cells) only")
    layer = model.get_submodule(run.arch.classifier)
    if not isinstance(layer, nn.Linear):
        raise ValueError(f"field_head needs a linear classifier; {run.arch.classifier} is {type(layer).__name__}")
    t0 = time.time()
    desc = "field head: features" if progress else ""
    feats = {part: infer(model, run.loader(part), run.arch.classifier, run.device, desc)[1]
             for part in ("train", "val")}
    y_train, y_val = run.targets("train"), run.targets("val")
    for copy_ in range(run.cfg.field_head_swaps):
        # background-invariance, as in training: the train split scored as at evaluation (every cell), each image's
        # background first replaced (always; corners half the time)
        swapped = run.loader("train", before=BackgroundSwap(p=1.0, p_corners=0.5), seed=run.cfg.seed + 1 + copy_)
        swapped = infer(model, swapped, run.arch.classifier, run.device,
                        f"field head: background-swapped copy {copy_ + 1}" if progress else "")[1]
        feats["train"] = np.concatenate([feats["train"], swapped])
    if run.cfg.field_head_swaps:
        y_train = np.tile(run.targets("train"), run.cfg.field_head_swaps + 1)
    mean, std = feats["train"].mean(0), feats["train"].std(0)
    std = np.where(std > 1e-8, std, 1.0)
    standard = {part: (f - mean) / std for part, f in feats.items()}
    tried, best = [], None
    for c in FIELD_HEAD_C:
        lr = LogisticRegression(C=c, max_iter=5000, class_weight="balanced" if run.cfg.class_weighting else None)
        lr.fit(standard["train"], y_train)
        logits = lr.decision_function(standard["val"])
        if logits.ndim == 1:  # two classes: sklearn gives one margin
            logits = np.stack([-logits / 2, logits / 2], 1)
        t = fit_temperature(logits, y_val)
        row = {"C": c, "val_nll_calibrated": nll(softmax(logits, t), y_val),
               "val_accuracy": float((logits.argmax(1) == y_val).mean())}
        tried.append(row)
        if progress:
            tqdm.write(f"field head C={c:g}: calibrated val NLL {row['val_nll_calibrated']:.4f}, "
                       f"val accuracy {row['val_accuracy']:.4f}")
        if best is None or improves(row["val_nll_calibrated"], best[0]["val_nll_calibrated"]):
            best = (row, lr)
    row, lr = best
    coef, intercept = lr.coef_, lr.intercept_
    if coef.shape[0] == 1:
        coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    weight = coef / std[None, :]
    bias = intercept - weight @ mean
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=layer.weight.dtype))
        layer.bias.copy_(torch.as_tensor(bias, dtype=layer.bias.dtype))
    swaps = run.cfg.field_head_swaps
    return {"method": "logistic regression of each training image's label on the mean penultimate features of its "
                      "cells (standardised on train), network frozen; folded into the classifier layer"
                      + (f"; trained on the train split plus {swaps} copies of it with each image's background "
                         "replaced (cells kept; flat colour, colour field, black, white or another image's "
                         "background; corners painted over half the time)" if swaps else ""),
            "C": row["C"], "chosen_by": "temperature-calibrated validation NLL", "tried": tried,
            "train_images": int(len(y_train)), "seconds": round(time.time() - t0, 1)}
