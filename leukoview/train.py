"""One training loop for every architecture: ``fit(config)`` trains, calibrates, chooses the operating
threshold on validation, evaluates on the held-out test split and writes a bundle.

:func:`prepare_run` (dataset, split, input spec) and :func:`finish_bundle` (calibration, threshold, OOD detector,
evaluation, bundle files) are shared with classical training (:mod:`leukoview.classical_train`)."""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import platform
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from torchvision import transforms as T
from tqdm import tqdm

from . import __version__, bundle, metrics, settings
from .archs import count_parameters, get_arch
from .augment import BackgroundSwap
from .calibration import CALIBRATION_SMOOTHING, fit_temperature, nll, softmax
from .card import INTENDED_USE
from .card import VERSION as CARD_VERSION
from .datasets import Dataset, load_dataset, make_split, split_grouping, split_hash
from .evaluate import evaluate, predictions_frame
from .images import load_image
from .ood import fit_ood, ood_scores
from .seen import SEEN, seen_for
from .transforms import COLOUR_METHODS, cell_level, colour_spec, eval_transform, sharpen_spec, train_transform


@dataclass
class TrainConfig:
    """Every knob of a training run; a YAML/JSON config file sets them and command-line flags override."""

    dataset: str = "all4"
    arch: str = "efficientnet_lite0"
    positive: list[str] = field(default_factory=list)  # only for folder:<path> datasets
    data_root: str = ""  # empty: LEUKOVIEW_DATA_ROOT / default
    out: str = ""  # empty: <models dir>/<dataset>-<arch>
    pretrained: bool = True
    epochs: int = 6
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    optimizer: str = "adamw"  # adamw | adam
    schedule: str = "onecycle"  # onecycle | plateau (halve the learning rate when validation stalls)
    label_smoothing: float = 0.1
    class_weighting: bool = True
    colour_jitter: float = 0.1
    acquisition_jitter: bool = False  # stain/background/scale/blur/JPEG/greyscale augmentation (leukoview.shift)
    stain_jitter: float = 0.1  # HED scale/shift strength when acquisition_jitter is on
    lowres_jitter: float = 0.0  # probability of down/up-sampling (a low-resolution camera) in acquisition_jitter
    locate_cell: bool = False  # crop the located cell (leukoview.segment.locate_cell) before everything else
    locate_scale: float = 1.6  # the crop's side as a multiple of the nucleus's larger side
    locate_min_side: float = 0.0  # the crop's side at least this fraction of the image's shorter side (0: no floor)
    locate_inside: bool = False  # keep the crop inside the image (shrunk and shifted in) instead of padding it
    crop_jitter: float = 0.15  # training: log-scale and shift jitter of the located cell's box
    locate_method: str = "nucleus"  # "nucleus": one cell per image; "cells": every cell, field = mean of cells
    max_cells: int = 6  # "cells": at most this many cells per image, largest first
    colour_norm: str = ""  # "reinhard": every input's colours standardised (leukoview.augment.normalise_lab)
    sharpen: float = 0.0  # unsharp-mask percent applied to every input after the colour step (0: none)
    sharpen_radius: float = 2.0  # its radius in pixels at the input size
    background_swap: float = 0.0  # probability of replacing the background (and the corners) around the cells
    source_adversary: float = 0.0  # weight of a scanner-adversarial loss: a head that tells the acquisition source
    #                                of the classes imaged by several sources (wbc9: neutrophil, PBC vs LMU) from
    #                                the penultimate features, through gradient reversal (Ganin & Lempitsky 2015),
    #                                so the features stop carrying the scanner; 0: none. Training only
    source_balance: bool = False  # sample each class's sources equally (each source's share of each class), so no
    #                               source can stand for a class; replaces the loss's class weights by sampling
    patience: int = 3  # epochs without improvement of the calibrated validation NLL before stopping
    seed: int = 0
    split_seed: int = 0
    fractions: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    min_specificity: float = 0.98  # specificity floor of the sensitivity-first threshold rule (validation)
    max_per_class: int = 0  # >0: subsample each class (smoke tests); recorded in the card
    input_size: int = 0  # 0: the architecture's
    threads: int = 0  # 0: all cores
    workers: int = 2
    device: str = "auto"
    ood_components: int = 64
    n_boot: int = 1000
    features: str = "pixels_hist"  # classical models only: pixels_hist | lite0_embed
    exclude_classes: list[str] = field(default_factory=list)  # leave these classes out entirely (OOD tests)
    field_head: bool = False  # cell-level models: refit the classifier on each training image's mean cell features
    field_head_swaps: int = 0  # ... also on this many copies of each training image with its background replaced
    field_level: bool = False  # cell-level models: train on every cell of an image, the loss on the mean of their
    #                            logits (multiple-instance learning) instead of one cell with the image's label
    init_from: str = ""  # a bundle folder to fine-tune from (its weights and its saved split; same dataset/arch)
    variant: str = ""  # appended to the bundle id (<dataset>-<arch>-<variant>) to keep runs side by side
    note: str = ""  # why this run departs from the architecture's defaults (e.g. CPU budget); shown in the card

    @property
    def scores_cells(self) -> bool:
        """Whether this recipe makes a cell-level model: every cell of an image scored, the image = their mean."""
        return self.locate_cell and self.locate_method == "cells"

    @classmethod
    def from_file(cls, path: Path | str | None, **overrides) -> TrainConfig:
        values: dict = {}
        if path:
            text = Path(path).read_text()
            if str(path).endswith((".yaml", ".yml")):
                import yaml

                values = yaml.safe_load(text) or {}
            else:
                values = json.loads(text)
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known: {sorted(known)}")
        cfg = cls(**values)
        if cfg.optimizer not in ("adamw", "adam"):
            raise ValueError(f"optimizer must be adamw or adam, not {cfg.optimizer!r}")
        if cfg.locate_method not in ("nucleus", "cells"):
            raise ValueError(f"locate_method must be nucleus or cells, not {cfg.locate_method!r}")
        if cfg.colour_norm not in ("", *COLOUR_METHODS):
            raise ValueError(f"colour_norm must be empty or one of {list(COLOUR_METHODS)}, not {cfg.colour_norm!r}")
        if cfg.sharpen < 0 or cfg.sharpen_radius <= 0:
            raise ValueError("sharpen (percent) must be 0 or more and sharpen_radius above 0")
        if not 0.0 <= cfg.locate_min_side <= 1.0:
            raise ValueError(f"locate_min_side is a fraction of the image's shorter side (0 to 1), "
                             f"not {cfg.locate_min_side}")
        if cfg.field_level and not cfg.scores_cells:
            raise ValueError("field_level trains on every cell of an image: it needs locate_cell with "
                             "locate_method cells")
        if cfg.source_adversary < 0:
            raise ValueError(f"source_adversary is a loss weight (0 or more), not {cfg.source_adversary}")
        if cfg.source_adversary and cfg.scores_cells:
            raise ValueError("source_adversary works on one input per image: not with a cell-level model")
        if cfg.source_balance and cfg.scores_cells:
            raise ValueError("source_balance samples single-cell images: not with a cell-level model")
        if cfg.schedule not in ("onecycle", "plateau"):
            raise ValueError(f"schedule must be onecycle or plateau, not {cfg.schedule!r}")
        return cfg


class ImageTable(TorchDataset):
    """(image tensor, class index) from a manifest slice, decoded with the project's safe loader; with ``domains``
    (one int per file) also the domain: (image, class, domain)."""

    def __init__(self, root: Path, files: list[str], targets: list[int], transform, domains: list[int] | None = None):
        self.root, self.files, self.targets, self.transform = root, files, targets, transform
        self.domains = domains

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        x = self.transform(load_image(self.root / self.files[i]))
        return (x, self.targets[i]) if self.domains is None else (x, self.targets[i], self.domains[i])


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the gradient multiplied by ``-weight`` backward (the gradient-reversal layer)."""

    @staticmethod
    def forward(ctx, x, weight: float):
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.weight * grad, None


def reverse_gradient(x: torch.Tensor, weight: float) -> torch.Tensor:
    return _ReverseGradient.apply(x, weight)


def adversary_weight(progress: float) -> float:
    """The reversal's strength over training (0 -> 1 as ``progress`` goes 0 -> 1; Ganin & Lempitsky's schedule), so
    the adversary does not pull on features the classifier has not formed yet."""
    return float(2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)


def balanced_weights(counts: np.ndarray) -> torch.Tensor:
    """Cross-entropy weights that make every group (class or source) count as much: total / (groups x count); a
    group with no images gets the weight of one image (it never enters the loss)."""
    counts = np.asarray(counts, float)
    return torch.tensor(counts.sum() / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32)


def source_balanced_weights(labels: pd.Series, sources: pd.Series, *, by_class: bool) -> torch.Tensor:
    """Sampling weight per image so that, within each class, every source that imaged it is drawn equally often;
    with ``by_class`` every class is also drawn equally often (else classes keep their share of the split)."""
    df = pd.DataFrame({"label": labels.to_numpy(), "source": sources.fillna("").to_numpy()})
    per_pair = df.groupby(["label", "source"])["label"].transform("size").to_numpy(float)
    n_sources = df.groupby("label")["source"].transform("nunique").to_numpy(float)
    class_size = df.groupby("label")["label"].transform("size").to_numpy(float)
    w = 1.0 / (n_sources * per_pair)  # each class sums to 1, split equally among its sources
    if not by_class:
        w = w * class_size
    return torch.as_tensor(w / w.sum(), dtype=torch.double)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.inference_mode()
def infer(model: nn.Module, loader: DataLoader, classifier: str, device: torch.device, desc: str = ""
          ) -> tuple[np.ndarray, np.ndarray]:
    """Logits and penultimate features (the classifier's input) for every item of ``loader``."""
    model.eval()
    feats: list[torch.Tensor] = []
    hook = model.get_submodule(classifier).register_forward_pre_hook(
        lambda _m, inp: feats.append(inp[0].detach().flatten(1).float().cpu()))
    logits, counts = [], []
    try:
        for x, _ in tqdm(loader, desc=desc, unit="batch", leave=False, disable=not desc):
            if isinstance(x, (list, tuple)):  # cell-level: all cells of the batch's images, and how many each
                x, n = x
                counts.append(n)
            logits.append(model(x.to(device).contiguous(memory_format=torch.channels_last)).float().cpu())
    finally:
        hook.remove()
    logits_, feats_ = torch.cat(logits), torch.cat(feats)
    if counts:  # an image's logits and features: the mean over its cells
        n = torch.cat(counts)
        logits_, feats_ = cell_means(logits_, n), cell_means(feats_, n)
    return logits_.numpy(), feats_.numpy()


def cell_means(t: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Rows of all images' cells (``n[i]`` consecutive rows for image i) -> one row per image: their mean, the
    cell-level call (training, :func:`infer`, and as the Predictor makes it)."""
    n = n.to(t.device)
    index = torch.repeat_interleave(torch.arange(len(n), device=t.device), n)
    return torch.zeros(len(n), t.shape[1], device=t.device, dtype=t.dtype).index_add(0, index, t) \
        / n.to(t.dtype)[:, None]


def _collate_cells(batch):
    """Images' cell stacks (K_i x C x H x W) -> one tensor of all cells and the count per image."""
    return (torch.cat([x for x, _ in batch]), torch.tensor([len(x) for x, _ in batch])), \
        torch.tensor([y for _, y in batch])


def _subsample(split: pd.DataFrame, per_class: int, seed: int) -> pd.DataFrame:
    if per_class <= 0:
        return split
    parts = [g.sample(min(len(g), per_class), random_state=seed) for _, g in split.groupby(["split", "label"])]
    return pd.concat(parts).sort_values("file").reset_index(drop=True)


def versions() -> dict:
    import torchvision

    return {"leukoview": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": np.__version__}


def _improves(loss: float, best: float) -> bool:
    return loss < best - 1e-5


def selected_epoch(log: list[dict]) -> int:
    """The epoch whose weights training kept: the first to reach the best criterion by more than 1e-5."""
    key = "val_nll_calibrated" if "val_nll_calibrated" in log[0] else "val_nll"
    best, epoch = math.inf, int(log[0]["epoch"])
    for row in log:
        if _improves(float(row[key]), best):
            best, epoch = float(row[key]), int(row["epoch"])
    return epoch


@dataclass
class Run:
    """What a training or re-evaluation run works on: dataset, split, input spec, device, loaders."""

    cfg: TrainConfig
    ds: Dataset
    split: pd.DataFrame
    spec: dict
    device: torch.device

    @property
    def classes(self) -> list[str]:
        return list(self.ds.classes)

    @property
    def positive(self) -> list[str]:
        return list(self.ds.positive)

    @property
    def arch(self):
        return get_arch(self.cfg.arch)

    def targets(self, part: str) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        return self.split.loc[self.split["split"] == part, "label"].map(index).to_numpy()

    def adversary_sources(self) -> tuple[list[str], list[str]]:
        """For the source adversary: the acquisition sources and the classes the train split has from more than
        one of them (wbc9: ["LMU", "PBC"], ["neutrophil"]); empty when the dataset records no sources."""
        train = self.split[self.split["split"] == "train"]
        if "source" not in train or not (train["source"].fillna("") != "").any():
            return [], []
        per_class = train.groupby("label")["source"].nunique()
        return sorted(train["source"].unique()), sorted(c for c in self.classes if per_class.get(c, 0) > 1)

    def domains(self, part: str) -> list[int] | None:
        """Per image of ``part``: its source's index when its class is imaged by several sources, else -1 (the
        adversary ignores it); None without a source adversary."""
        if not self.cfg.source_adversary:
            return None
        sources, shared = self.adversary_sources()
        sub = self.split[self.split["split"] == part]
        return [sources.index(src) if lab in shared else -1 for lab, src in zip(sub["label"], sub["source"],
                                                                               strict=True)]

    def loader(self, part: str, train: bool = False, *, before=None, seed: int | None = None) -> DataLoader:
        """``before``: a transform applied to each image ahead of the evaluation transform (not in training);
        ``seed``: the loader's generator seed (default: the config's)."""
        sub = self.split[self.split["split"] == part]
        every_cell = cell_level(self.spec) and (not train or self.cfg.field_level)
        tf = (train_transform(self.spec, colour=self.cfg.colour_jitter, acquisition=self.cfg.acquisition_jitter,
                              stain=self.cfg.stain_jitter, lowres=self.cfg.lowres_jitter,
                              crop_jitter=self.cfg.crop_jitter, background=self.cfg.background_swap,
                              all_cells=every_cell)
              if train else eval_transform(self.spec))
        if before is not None and not train:
            tf = T.Compose([before, tf])
        data = ImageTable(self.ds.root, sub["file"].tolist(), self.targets(part).tolist(), tf,
                          domains=self.domains(part) if train else None)
        g = torch.Generator().manual_seed(self.cfg.seed if seed is None else seed)
        sampler = None
        if train and self.cfg.source_balance:
            sampler = torch.utils.data.WeightedRandomSampler(
                source_balanced_weights(sub["label"], sub["source"], by_class=self.cfg.class_weighting),
                num_samples=len(sub), replacement=True, generator=g)
        return DataLoader(data, batch_size=self.cfg.batch_size, shuffle=train and sampler is None, sampler=sampler,
                          num_workers=self.cfg.workers, generator=g, worker_init_fn=_worker_init,
                          persistent_workers=False, drop_last=False,
                          pin_memory=self.device.type == "cuda", collate_fn=_collate_cells if every_cell else None)


def prepare_run(cfg: TrainConfig, *, progress: bool, split: pd.DataFrame | None = None, spec: dict | None = None
             ) -> Run:
    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    root = Path(cfg.data_root).resolve() if cfg.data_root else settings.data_root()
    ds = load_dataset(cfg.dataset, root, positive=cfg.positive)
    if cfg.exclude_classes:
        unknown = sorted(set(cfg.exclude_classes) - set(ds.classes))
        if unknown or set(ds.positive) <= set(cfg.exclude_classes):
            raise ValueError(f"exclude_classes {cfg.exclude_classes}: unknown {unknown} or no positive class left")
        ds = dataclasses.replace(ds, classes=tuple(c for c in ds.classes if c not in cfg.exclude_classes),
                                 positive=tuple(c for c in ds.positive if c not in cfg.exclude_classes),
                                 manifest=ds.manifest[~ds.manifest["label"].isin(cfg.exclude_classes)]
                                 .reset_index(drop=True))
    if split is None:
        split = _subsample(make_split(ds, seed=cfg.split_seed, fractions=tuple(cfg.fractions), progress=progress),
                           cfg.max_per_class, cfg.seed)
    for part in ("train", "val", "test"):
        missing = sorted(set(ds.classes) - set(split.loc[split["split"] == part, "label"]))
        if missing:
            raise ValueError(f"the {part} split has no images of {missing}; the dataset is too small to split")
    spec = spec or get_arch(cfg.arch).input_spec()
    if cfg.input_size:
        spec["size"] = cfg.input_size
    if cfg.scores_cells:
        spec["locate"] = {"method": "cells", "scale": cfg.locate_scale, "max_cells": cfg.max_cells,
                          "what": f"every violet-stained cell (at most {cfg.max_cells}, largest first), a square "
                                  f"{cfg.locate_scale:g}x its inscribed diameter; the image's logits are the mean "
                                  "of its cells'; training: one cell of the image at random, with its label"}
        if cfg.field_level:
            spec["locate"]["what"] = spec["locate"]["what"].replace(
                "training: one cell of the image at random, with its label",
                "training: every cell of the image, the loss on the mean of their logits (multiple-instance)")
        if cfg.field_head:
            spec["locate"]["what"] += "; then the classifier refitted on each training image's mean cell features"
    elif cfg.locate_cell:
        spec["locate"] = {"method": "nucleus", "scale": cfg.locate_scale,
                          "what": "square around the largest stained nucleus (blue minus green above Otsu), "
                                  f"{cfg.locate_scale:g}x its larger side; the whole image when none is found"}
        if cfg.locate_min_side:
            spec["locate"]["min_side"] = cfg.locate_min_side
            spec["locate"]["what"] += f"; at least {cfg.locate_min_side:g} of the image's shorter side"
        if cfg.locate_inside:
            spec["locate"]["inside"] = True
            spec["locate"]["what"] += "; kept inside the image (shrunk and shifted in, never padded)"
    if cfg.colour_norm:
        spec["colour"] = colour_spec(cfg.colour_norm)
    if cfg.sharpen:
        spec["sharpen"] = sharpen_spec(cfg.sharpen, cfg.sharpen_radius)
    return Run(cfg, ds, split, spec, _device(cfg.device))


def image_logits(model: nn.Module, x, device: torch.device) -> torch.Tensor:
    """Logits per image of a batch: the network's own, or for a batch of cell stacks (all cells, count per image)
    the mean of each image's cells' logits, as :func:`infer` and the Predictor make a cell-level call."""
    if not isinstance(x, (list, tuple)):
        return model(x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last))
    cells, n = x
    return cell_means(model(cells.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)), n)


def _train(run: Run, *, progress: bool, init: nn.Module | None = None
           ) -> tuple[nn.Module, str | None, list[dict]]:
    """``init``: start from this network (fine-tuning) instead of the architecture's initial weights."""
    cfg, device, classes, positive = run.cfg, run.device, run.classes, run.positive
    target = {c: i for i, c in enumerate(classes)}
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
    if cfg.optimizer == "adam":
        optimiser = torch.optim.Adam(params, lr=cfg.lr)
    else:
        optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = max(1, cfg.epochs * len(train_loader))
    if cfg.schedule == "plateau":
        schedule = None
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.5, patience=1)
    else:
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=cfg.lr, total_steps=steps,
                                                       pct_start=0.15)
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
        probs = softmax(logits)
        val_nll = nll(probs, val_targets)
        # Selection criterion: NLL after temperature scaling. Label smoothing keeps raw probabilities below 1,
        # so raw NLL rises as the model sharpens even while it gets more accurate; the temperature undoes that.
        t = fit_temperature(logits, val_targets)
        tprobs = softmax(logits, t)
        val_nll_cal = nll(tprobs, val_targets)
        ybin = np.isin(val_targets, [target[c] for c in positive]).astype(int)
        row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "val_nll": val_nll,
               "val_nll_calibrated": val_nll_cal, "val_temperature": t,
               "val_accuracy": float((probs.argmax(1) == val_targets).mean()),
               "val_balanced_accuracy": metrics.balanced_accuracy(val_targets, probs.argmax(1)),
               "val_roc_auc": metrics.roc_auc(ybin, probs[:, [target[c] for c in positive]].sum(1))
               if 0 < ybin.sum() < len(ybin) else float("nan"),
               "lr": optimiser.param_groups[0]["lr"], "seconds": time.time() - t0,
               "images_per_s": seen / max(time.time() - t0, 1e-9)}
        if adversary is not None:
            row.update(adversary.epoch_summary())
        log.append(row)
        if schedule is None:
            plateau.step(val_nll_cal)
        if progress:
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if _improves(val_nll_cal, best_loss):
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


class _SourceAdversary:
    """The source adversary of a training run (``TrainConfig.source_adversary``): the classifier's input is taken
    by a hook, and a small head, through gradient reversal, tells the source of the images whose class several
    sources imaged. Its balanced accuracy per epoch goes into the training log (0.5 for two sources: the
    features no longer tell the scanners apart)."""

    def __init__(self, model: nn.Module, classifier: str, n_sources: int, weights: torch.Tensor,
                 device: torch.device):
        layer = model.get_submodule(classifier)
        if not isinstance(layer, nn.Linear):
            raise ValueError(f"source_adversary needs a linear classifier layer, {classifier} is {type(layer)}")
        self.head = nn.Sequential(nn.Linear(layer.in_features, 128), nn.ReLU(), nn.Linear(128, n_sources)).to(device)
        self.criterion = nn.CrossEntropyLoss(weight=weights.to(device))
        self.n_sources, self._features = n_sources, None
        self._hook = layer.register_forward_pre_hook(lambda _m, inputs: setattr(self, "_features", inputs[0]))
        self._right = np.zeros(n_sources)
        self._count = np.zeros(n_sources)
        self._loss, self._n = 0.0, 0

    def loss(self, domains: torch.Tensor, weight: float) -> torch.Tensor:
        keep = domains >= 0
        if not bool(keep.any()):
            return self._features.sum() * 0.0
        logits = self.head(reverse_gradient(self._features.flatten(1)[keep].float(), weight))
        target = domains[keep]
        loss = self.criterion(logits, target)
        called = logits.argmax(1).detach().cpu().numpy()
        truth = target.cpu().numpy()
        np.add.at(self._count, truth, 1)
        np.add.at(self._right, truth, called == truth)
        self._loss += float(loss.detach()) * len(truth)
        self._n += len(truth)
        return loss

    def epoch_summary(self) -> dict:
        seen = self._count > 0
        out = {"source_adversary_loss": self._loss / max(self._n, 1),
               "source_adversary_balanced_accuracy": float((self._right[seen] / self._count[seen]).mean())
               if seen.any() else float("nan")}
        self._right[:], self._count[:], self._loss, self._n = 0, 0, 0.0, 0
        return out

    def remove(self) -> None:
        self._hook.remove()


def _source_adversary(run: Run, model: nn.Module) -> _SourceAdversary | None:
    """The run's source adversary (its head is trained by the run's optimiser), or None when the config has
    none. Refuses a dataset without two sources of one class: there would be nothing to be invariant to."""
    if not run.cfg.source_adversary:
        return None
    sources, shared = run.adversary_sources()
    if len(sources) < 2 or not shared:
        raise ValueError(f"source_adversary needs a class imaged by two or more sources in the train split; "
                         f"{run.cfg.dataset} has sources {sources or 'none'}")
    domains = np.array([d for d in run.domains("train") if d >= 0])
    weights = balanced_weights(np.bincount(domains, minlength=len(sources)))
    return _SourceAdversary(model, run.arch.classifier, len(sources), weights, run.device)


# inverse regularisation strengths the field head tries (on standardised features); validation chooses
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
        if best is None or _improves(row["val_nll_calibrated"], best[0]["val_nll_calibrated"]):
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
    cfg, device, split, ds = run.cfg, run.device, run.split, run.ds
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
    test_metrics = evaluate(frames["test"], classes, positive, chosen["threshold"], n_boot=cfg.n_boot,
                            seed=cfg.seed)
    test_metrics["validation"] = {k: v for k, v in evaluate(val_pred, classes, positive, chosen["threshold"], n_boot=0
                                                       ).items() if not k.endswith("ci95") and k != "bootstrap"}
    test_metrics["uncalibrated_test_ece"] = metrics.top_label_ece(run.targets("test"), softmax(out["test"][0]))
    test_metrics["ood_flag_rate_test"] = float(np.mean(frames["test"]["ood_score"] > ood_threshold))
    if ds.has_sources:  # the same test split, per acquisition source (scanner)
        test_metrics["per_source"] = {
            src: {k: v for k, v in evaluate(g, classes, positive, chosen["threshold"], n_boot=cfg.n_boot,
                                            seed=cfg.seed).items() if k != "bootstrap"}
            for src, g in frames["test"].groupby("source")}

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
    card = {
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
    bundle.finalize(folder, card)
    if progress:
        tqdm.write(f"bundle written to {folder}")
    return folder
