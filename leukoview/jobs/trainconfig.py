"""Every knob of a training run (:class:`TrainConfig`), read from a YAML/JSON file and checked once."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from leukoview.models.transforms import COLOUR_METHODS


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
    acquisition_jitter: bool = False  # stain/background/scale/blur/JPEG/greyscale augmentation (leukoview.audits.shift)
    stain_jitter: float = 0.1  # HED scale/shift strength when acquisition_jitter is on
    lowres_jitter: float = 0.0  # probability of down/up-sampling (a low-resolution camera) in acquisition_jitter
    locate_cell: bool = False  # crop the located cell (leukoview.primitives.segment.locate_cell) before everything else
    locate_scale: float = 1.6  # the crop's side as a multiple of the nucleus's larger side
    locate_min_side: float = 0.0  # the crop's side at least this fraction of the image's shorter side (0: no floor)
    locate_inside: bool = False  # keep the crop inside the image (shrunk and shifted in) instead of padding it
    crop_jitter: float = 0.15  # training: log-scale and shift jitter of the located cell's box
    locate_method: str = "nucleus"  # "nucleus": one cell per image; "cells": every cell, field = mean of cells
    max_cells: int = 6  # "cells": at most this many cells per image, largest first
    colour_norm: str = ""  # "reinhard": every input's colours standardised (leukoview.primitives.augment.normalise_lab)
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
