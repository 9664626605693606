"""What a training run works on: the dataset, its leakage-aware split, the input spec, the loaders (image
tables, source-balanced sampling, cell stacks) and inference over a loader (:class:`Run`, :func:`prepare_run`)."""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from torchvision import transforms as T
from tqdm import tqdm

from leukoview.jobs.trainconfig import TrainConfig
from leukoview.models.archs import get_arch
from leukoview.models.datasets import Dataset, DatasetError, evaluation_only_files, load_dataset
from leukoview.models.splits import make_split
from leukoview.models.transforms import cell_level, colour_spec, eval_transform, sharpen_spec, train_transform
from leukoview.primitives import settings
from leukoview.primitives.images import load_image


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
    if shut := evaluation_only_files(ds, root):
        raise DatasetError(f"{cfg.dataset}: {len(shut)} of its images are in an evaluation-only set "
                           f"({', '.join(settings.EVALUATION_ONLY)} under {root}), e.g. {shut[0]}; those are for "
                           "external evaluation (python -m leukoview external), never for training")
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
