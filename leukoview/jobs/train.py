"""One training loop for every architecture: ``fit(config)`` trains, calibrates, chooses the operating
threshold on validation, evaluates on the held-out test split and writes a bundle.

:func:`prepare_run` (dataset, split, input spec) and :func:`finish_bundle` (calibration, threshold, OOD detector,
evaluation, bundle files) are shared with classical training (:mod:`leukoview.jobs.classical_train`)."""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from leukoview.jobs.adversary import _source_adversary, adversary_weight
from leukoview.jobs.bundle_writer import improves, write_bundle
from leukoview.jobs.fieldhead import fit_field_head
from leukoview.jobs.rundata import (
    Run,
    balanced_weights,
    image_logits,
    infer,
    prepare_run,
)
from leukoview.jobs.trainconfig import TrainConfig
from leukoview.models import bundle
from leukoview.primitives import metrics
from leukoview.primitives.calibration import fit_temperature, nll, softmax


def _optimiser(cfg: TrainConfig, params: list, steps: int):
    """(optimiser, one-cycle schedule stepped per batch or None, plateau schedule stepped per epoch or None)."""
    if cfg.optimizer == "adam":
        optimiser = torch.optim.Adam(params, lr=cfg.lr)
    else:
        optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.schedule == "plateau":
        return optimiser, None, torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.5, patience=1)
    return optimiser, torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=cfg.lr, total_steps=steps,
                                                          pct_start=0.15), None


def _validation(logits: np.ndarray, targets: np.ndarray, pos_idx: list[int]) -> dict:
    """An epoch's validation row. The selection criterion is NLL after temperature scaling: label smoothing keeps
    raw probabilities below 1, so raw NLL rises as the model sharpens even while it gets more accurate; the
    temperature undoes that."""
    probs = softmax(logits)
    t = fit_temperature(logits, targets)
    ybin = np.isin(targets, pos_idx).astype(int)
    return {"val_nll": nll(probs, targets), "val_nll_calibrated": nll(softmax(logits, t), targets),
            "val_temperature": t, "val_accuracy": float((probs.argmax(1) == targets).mean()),
            "val_balanced_accuracy": metrics.balanced_accuracy(targets, probs.argmax(1)),
            "val_roc_auc": metrics.roc_auc(ybin, probs[:, pos_idx].sum(1)) if 0 < ybin.sum() < len(ybin)
            else float("nan")}


def _train(run: Run, *, progress: bool, init: nn.Module | None = None
           ) -> tuple[nn.Module, str | None, list[dict]]:
    """``init``: start from this network (fine-tuning) instead of the architecture's initial weights."""
    cfg, device, classes = run.cfg, run.device, run.classes
    pos_idx = [classes.index(c) for c in run.positive]
    train_loader, val_loader = run.loader("train", train=True), run.loader("val")
    if init is None:
        model, pretrained_source = run.arch.build(len(classes), pretrained=cfg.pretrained)
    else:
        model, pretrained_source = init, None
    model = model.to(device).to(memory_format=torch.channels_last)
    counts = run.split[run.split["split"] == "train"]["label"].value_counts().reindex(classes).to_numpy(float)
    weights = balanced_weights(counts) if cfg.class_weighting and not cfg.source_balance else None
    criterion = nn.CrossEntropyLoss(weight=weights.to(device) if weights is not None else None,
                                    label_smoothing=cfg.label_smoothing)
    adversary = _source_adversary(run, model)
    params = [*model.parameters(), *(adversary.head.parameters() if adversary is not None else [])]
    steps = max(1, cfg.epochs * len(train_loader))
    optimiser, schedule, plateau = _optimiser(cfg, params, steps)
    use_amp = device.type == "cuda"

    log, best, best_loss, stale = [], None, math.inf, 0
    val_targets = run.targets("val")
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0, seen, loss_sum = time.time(), 0, 0.0
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", disable=not progress)
        for step, (x, yb, *db) in enumerate(bar):
            yb = yb.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = criterion(image_logits(model, x, device), yb)
                if adversary is not None:
                    done = ((epoch - 1) * len(train_loader) + step) / steps
                    loss = loss + cfg.source_adversary * adversary.loss(db[0].to(device), adversary_weight(done))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if schedule is not None:
                schedule.step()
            seen += len(yb)
            loss_sum += loss.item() * len(yb)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
        logits, _ = infer(model, val_loader, run.arch.classifier, device)
        row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), **_validation(logits, val_targets, pos_idx),
               "lr": optimiser.param_groups[0]["lr"], "seconds": time.time() - t0,
               "images_per_s": seen / max(time.time() - t0, 1e-9)}
        val_nll_cal = row["val_nll_calibrated"]
        if adversary is not None:
            row.update(adversary.epoch_summary())
        log.append(row)
        if schedule is None:
            plateau.step(val_nll_cal)
        if progress:
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if improves(val_nll_cal, best_loss):
            best_loss, best, stale = val_nll_cal, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= cfg.patience:
                if progress:
                    tqdm.write(f"early stop: calibrated validation NLL has not improved for {cfg.patience} epochs")
                break
    model.load_state_dict(best)
    if adversary is not None:
        adversary.remove()
    return model, pretrained_source, log


def fit(cfg: TrainConfig, *, progress: bool = True) -> Path:
    """Train ``cfg.arch`` on ``cfg.dataset`` and write a verified bundle; returns its folder."""
    t_start = time.time()
    if cfg.init_from:
        return _fine_tune(cfg, progress=progress)
    run = prepare_run(cfg, progress=progress)
    model, pretrained_source, log = _train(run, progress=progress)
    head = fit_field_head(run, model, progress=progress) if cfg.field_head else None
    return write_bundle(run, model, log=log, train_seconds=time.time() - t_start,
                        pretrained_source=pretrained_source, progress=progress, head=head)


def _fine_tune(cfg: TrainConfig, *, progress: bool) -> Path:
    """``init_from``: train on from a bundle's shipped weights, on its saved split (so the test split stays unseen),
    same dataset, architecture and input size; the card says where the weights came from."""
    t_start = time.time()
    b = bundle.load_bundle(cfg.init_from)  # verified: sha256 of every file
    src = b.card.config
    clash = [k for k in ("dataset", "arch") if src.get(k) != getattr(cfg, k)]
    if not b.is_network or clash:
        raise ValueError(f"{cfg.init_from}: cannot fine-tune from it: "
                         + ("a classical model" if not b.is_network else f"its {', '.join(clash)} differ"))
    if cfg.input_size and cfg.input_size != b.card.input["size"]:
        raise ValueError(f"input_size {cfg.input_size} differs from the bundle's {b.card.input['size']}")
    if Path(cfg.out or "").resolve() == b.path.resolve():
        raise ValueError("write the fine-tuned bundle to another folder: the source bundle is kept as it is")
    run = prepare_run(cfg, progress=progress, split=b.split())
    model, _, log = _train(run, progress=progress, init=b.build_model())
    head = fit_field_head(run, model, progress=progress) if cfg.field_head else None
    imagenet = b.card.imagenet_initialised
    origin = (b.card.pretrained_source or "ImageNet") if imagenet else "from scratch"
    sha = b.card.weights_sha256
    note = f"fine-tuned from bundle {b.id} (weights sha256 {sha[:16]}), which started from {origin}"
    return write_bundle(run, model, log=log, train_seconds=time.time() - t_start,
                        pretrained_source=note if imagenet else None, progress=progress, head=head,
                        fine_tuned_from={"id": b.id, "weights_sha256": sha, "started": origin})


def refit_field_head(source: Path, out: Path, *, variant: str | None = None, swaps: int = 0,
                     max_cells: int | None = None, progress: bool = True) -> Path:
    """A new bundle in ``out`` from a cell-level bundle's shipped weights and saved split with its classifier
    refitted by :func:`fit_field_head`, then every post-training step (calibration, threshold, OOD, test
    metrics). ``swaps``: background-swapped copies of the train split the head also learns from. ``max_cells``: score
    at most this many cells of an image (largest first) instead of the source's number, which the head is then fitted
    for (fewer cells: faster scoring; the network is the same). The card's config
    records ``field_head: true``; training the same config from scratch does the same
    after fine-tuning. The source bundle is not changed."""
    b = bundle.load_bundle(source)
    if not b.card.is_network:
        raise ValueError(f"{source}: a classical model has no network head to refit")
    cfg = _card_config(b)
    if Path(out).resolve() == Path(source).resolve():
        raise ValueError("write the refitted bundle to another folder: the source bundle is kept as it is")
    cfg.out, cfg.field_head, cfg.field_head_swaps = str(out), True, int(swaps)
    if max_cells is not None:
        if not cfg.scores_cells:
            raise ValueError(f"{source}: --max-cells applies to a cell-level model (one that scores every cell)")
        if max_cells < 1:
            raise ValueError(f"--max-cells must be at least 1, not {max_cells}")
        cfg.max_cells = int(max_cells)
    suffix = "-fieldhead" + (f"-{cfg.max_cells}cells" if max_cells is not None else "")
    cfg.variant = variant if variant is not None else f"{cfg.variant}{suffix}".lstrip("-")
    cfg.note = (f"{cfg.note}; " if cfg.note else "") + f"classifier refitted on field-mean cell features from {b.id}"
    return _rewrite(b, cfg, progress=progress, refit_head=True)


def reevaluate(folder: Path, *, progress: bool = True, **overrides) -> Path:
    """Re-run the post-training steps (calibration, threshold, OOD, test metrics, predictions) of a bundle with
    its own shipped weights and saved split; the training log and time are kept. ``overrides`` change
    post-training settings such as ``min_specificity`` and are recorded in the card's config."""
    b = bundle.load_bundle(folder)
    if not b.card.is_network:
        raise ValueError(f"{folder}: a classical model; re-fit it with `python -m leukoview train` instead")
    cfg = _card_config(b)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for k, v in overrides.items():
        if k not in fields:
            raise ValueError(f"unknown setting {k!r}")
        if v is not None:
            setattr(cfg, k, v)
    cfg.out = str(folder)
    return _rewrite(b, cfg, progress=progress)


def _card_config(b: bundle.Bundle) -> TrainConfig:
    """The recipe a bundle was trained with, from its card (settings this version no longer has are dropped)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in b.card.config.items() if k in fields})


def _rewrite(b: bundle.Bundle, cfg: TrainConfig, *, progress: bool, refit_head: bool = False) -> Path:
    """A bundle from ``b``'s shipped weights and saved split under ``cfg`` (its ``out``), with every post-training
    step redone; ``refit_head``: the classifier refitted first (:func:`fit_field_head`). The training log, time
    and weights' origin are ``b``'s."""
    run = prepare_run(cfg, progress=progress, split=b.split())
    model = b.build_model().to(run.device).to(memory_format=torch.channels_last)
    head = None
    if refit_head:
        head = fit_field_head(run, model, progress=progress)
        head["from_bundle"] = {"id": b.id, "weights_sha256": b.card.weights_sha256}
    log = pd.read_csv(b.path / bundle.LOG).to_dict("records")
    source = b.card.pretrained_source if b.card.imagenet_initialised else None
    return write_bundle(run, model, log=log, train_seconds=b.card.training["wall_time_s"],
                        pretrained_source=source, progress=progress, head=head)
