"""Writing a bundle: from the logits and penultimate features of every split, calibrate, choose the threshold,
fit the OOD detector, evaluate once on test and write the bundle folder and its card (:func:`finish_bundle`;
networks through :func:`write_bundle`, classical models through :mod:`leukoview.jobs.classical_train`)."""
from __future__ import annotations

import dataclasses
import math
import platform
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from leukoview import __version__
from leukoview.jobs.evaluate import evaluate, predictions_frame
from leukoview.jobs.rundata import Run, infer
from leukoview.models import bundle
from leukoview.models.archs import count_parameters
from leukoview.models.card import INTENDED_USE
from leukoview.models.card import VERSION as CARD_VERSION
from leukoview.models.seen import SEEN, seen_for
from leukoview.models.splits import split_grouping, split_hash
from leukoview.primitives import metrics, settings
from leukoview.primitives.calibration import CALIBRATION_SMOOTHING, fit_temperature, softmax
from leukoview.primitives.ood import fit_ood, ood_scores


def versions() -> dict:
    import torchvision

    return {"leukoview": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": np.__version__}


def improves(loss: float, best: float) -> bool:
    return loss < best - 1e-5


def selected_epoch(log: list[dict]) -> int:
    """The epoch whose weights training kept: the first to reach the best criterion by more than 1e-5."""
    key = "val_nll_calibrated" if "val_nll_calibrated" in log[0] else "val_nll"
    best, epoch = math.inf, int(log[0]["epoch"])
    for row in log:
        if improves(float(row[key]), best):
            best, epoch = float(row[key]), int(row["epoch"])
    return epoch


def write_bundle(run: Run, model: nn.Module, *, log: list[dict], train_seconds: float,
                 pretrained_source: str | None, progress: bool, head: dict | None = None,
                 fine_tuned_from: dict | None = None) -> Path:
    """Score the network's shipped (fp16) weights on every split, then :func:`finish_bundle`."""
    device, arch = run.device, run.arch
    with torch.no_grad():  # evaluate exactly the weights that ship (fp16), so stored predictions reproduce
        for v in model.state_dict().values():
            if v.is_floating_point():
                v.copy_(v.half().float())
    desc = "scoring" if progress else ""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {
        part: infer(model, run.loader(part), arch.classifier, device, desc) for part in ("val", "test", "train")}
    card = {"kind": "network", "architecture_description": arch.description, "classifier": arch.classifier,
            "cam_layer": arch.cam_layer, "imagenet_initialised": pretrained_source is not None,
            "pretrained_source": pretrained_source or "none: trained from scratch (random initialisation)",
            "parameters": count_parameters(model), "weights_dtype": "float16"}
    if head is not None:
        card["head"] = head
    if fine_tuned_from is not None:
        card["fine_tuned_from"] = fine_tuned_from
    return finish_bundle(run, out, log=log, train_seconds=train_seconds,
                         save_weights=lambda folder: bundle.save_weights(model, folder / bundle.WEIGHTS),
                         card_extra=card, progress=progress)


def finish_bundle(run: Run, out: dict[str, tuple[np.ndarray, np.ndarray]], *, log: list[dict],
                  train_seconds: float, save_weights, card_extra: dict, bundle_suffix: str = "",
                  progress: bool) -> Path:
    """From logits and penultimate features of every split: calibrate, choose the threshold and fit the OOD
    detector on validation, evaluate once on test, and write the bundle folder (networks and classical models
    alike)."""
    cfg, split, ds = run.cfg, run.split, run.ds
    classes, positive = run.classes, run.positive
    best_epoch = selected_epoch(log)
    val_targets = run.targets("val")
    temperature = fit_temperature(out["val"][0], val_targets)
    ood_state, ood_threshold = fit_ood(out["train"][1], run.targets("train"), out["val"][1],
                                       components=cfg.ood_components)

    frames = {}
    for part in ("val", "test"):
        sub = split[split["split"] == part]
        logits, feats = out[part]
        frames[part] = predictions_frame(sub["file"], sub["label"], softmax(logits, temperature), classes, positive,
                                         patients=sub["patient"].astype(str) if ds.has_patients else None,
                                         groups=sub["group"], ood=ood_scores(ood_state, feats),
                                         sources=sub["source"] if ds.has_sources else None)
    val_pred = frames["val"]
    chosen = metrics.choose_threshold(val_pred["positive"].to_numpy(), val_pred["suspicion"].to_numpy(),
                                min_specificity=cfg.min_specificity)
    test_metrics = _test_metrics(run, frames, out, chosen["threshold"], ood_threshold)

    bundle_id = (f"{cfg.dataset.replace('folder:', '').replace('/', '_')}-{cfg.arch}{bundle_suffix}"
                 + (f"-{cfg.variant}" if cfg.variant else ""))
    folder = Path(cfg.out) if cfg.out else settings.models_dir() / bundle_id
    folder.mkdir(parents=True, exist_ok=True)
    for stale_file in folder.iterdir():
        if stale_file.is_file():
            stale_file.unlink()
    save_weights(folder)
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in ood_state.items()}, str(folder / bundle.OOD))
    frames["test"].to_csv(folder / bundle.PREDICTIONS, index=False)
    frames["val"].to_csv(folder / bundle.VAL_PREDICTIONS, index=False)
    split[["file", "label", "patient", "group", "split", *(["source"] if ds.has_sources else [])]].to_csv(
        folder / bundle.SPLIT, index=False)
    pd.DataFrame(log).to_csv(folder / bundle.LOG, index=False)
    bundle.write_json(folder / SEEN, seen_for(ds, split))
    bundle.write_json(folder / bundle.METRICS, test_metrics)
    card = _card(run, bundle_id, chosen=chosen, temperature=temperature, ood=(ood_state, ood_threshold),
                 card_extra=card_extra, log=log, best_epoch=best_epoch, train_seconds=train_seconds)
    bundle.finalize(folder, card)
    if progress:
        tqdm.write(f"bundle written to {folder}")
    return folder


def _test_metrics(run: Run, frames: dict, out: dict, threshold: float, ood_threshold: float) -> dict:
    """Every test metric with intervals, the validation figures beside them, and the test split per source."""
    cfg, classes, positive = run.cfg, run.classes, run.positive
    test_metrics = evaluate(frames["test"], classes, positive, threshold, n_boot=cfg.n_boot,
                            seed=cfg.seed)
    test_metrics["validation"] = {k: v for k, v in evaluate(frames["val"], classes, positive, threshold, n_boot=0
                                                       ).items() if not k.endswith("ci95") and k != "bootstrap"}
    test_metrics["uncalibrated_test_ece"] = metrics.top_label_ece(run.targets("test"), softmax(out["test"][0]))
    test_metrics["ood_flag_rate_test"] = float(np.mean(frames["test"]["ood_score"] > ood_threshold))
    if run.ds.has_sources:  # the same test split, per acquisition source (scanner)
        test_metrics["per_source"] = {
            src: {k: v for k, v in evaluate(g, classes, positive, threshold, n_boot=cfg.n_boot,
                                            seed=cfg.seed).items() if k != "bootstrap"}
            for src, g in frames["test"].groupby("source")}

    return test_metrics


def _card(run: Run, bundle_id: str, *, chosen: dict, temperature: float, ood: tuple, card_extra: dict,
          log: list[dict], best_epoch: int, train_seconds: float) -> dict:
    """The card's JSON for a newly written bundle (the one place a card is made; :mod:`leukoview.models.card` reads
    it)."""
    cfg, device, split, ds = run.cfg, run.device, run.split, run.ds
    ood_state, ood_threshold = ood
    classes, positive = run.classes, run.positive
    return {
        "version": CARD_VERSION,
        "id": bundle_id,
        "task": cfg.dataset,
        "intended_use": INTENDED_USE,
        "architecture": cfg.arch,
        **{k: card_extra[k] for k in ("kind", "architecture_description", "classifier", "cam_layer",
                                      "classical", "head", "fine_tuned_from") if k in card_extra},
        "classes": classes,
        "positive_classes": positive,
        "input": run.spec,
        "threshold": chosen["threshold"],
        "threshold_rule": chosen["rule"],
        "threshold_validation": {k: chosen[k] for k in ("val_sensitivity", "val_specificity") if k in chosen},
        "temperature": temperature,
        "temperature_note": ("fitted on validation by minimum cross-entropy against targets smoothed by "
                             f"{CALIBRATION_SMOOTHING:g} (keeps the temperature finite when validation is "
                             "error-free; Guo et al. 2017)"),
        "ood": {"method": f"Mahalanobis distance to the nearest class mean in a {ood_state['components'].shape[0]}"
                          "-component PCA of the penultimate features (fitted on train)",
                "threshold": ood_threshold, "threshold_rule": "99th percentile of validation scores",
                "file": bundle.OOD},
        "imagenet_initialised": card_extra.get("imagenet_initialised", False),
        "pretrained_source": card_extra.get("pretrained_source",
                                            "none: trained from scratch (random initialisation)"),
        "dataset": {"name": ds.name, "description": ds.description, "licence": ds.licence,
                    "images": int(len(split)), "counts": split.groupby("split")["label"].value_counts()
                    .unstack(fill_value=0).to_dict(orient="index"),
                    "subsampled_per_class": cfg.max_per_class or None},
        "split": {"file": bundle.SPLIT, "hash": split_hash(split), "seed": cfg.split_seed, "fractions": cfg.fractions,
                  "grouping": split_grouping(ds)},
        "parameters": card_extra["parameters"],
        "weights_dtype": card_extra["weights_dtype"],
        "training": {"config": dataclasses.asdict(cfg), "epochs_run": len(log), "best_epoch": best_epoch,
                     "wall_time_s": round(train_seconds, 1), "device": str(device), "note": cfg.note,
                     "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor()
                     or platform.machine(), "threads": torch.get_num_threads()},
        "versions": versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
