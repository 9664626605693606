"""Datasets: scan a folder into a manifest (file, label, patient). Splitting it without leakage is
:mod:`leukoview.models.splits`.

A manifest is a ``pandas.DataFrame`` with one row per image:
``file`` (POSIX path relative to the dataset's ``root``), ``label`` (class name), ``patient`` (string, empty when
unknown), ``source_split`` (the split the publisher shipped, empty when none) and ``source`` (the acquisition
source, e.g. the scanner, empty when the dataset has one).

Known layouts are the tasks of :data:`leukoview.primitives.tasks.TASKS`, each with its loader in :data:`LOADERS`; any
class-per-folder directory works through :func:`folder_dataset`. Files are found with
:func:`leukoview.primitives.images.find_images` (the project's one discovery rule).
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from leukoview.primitives import settings
from leukoview.primitives.images import find_images
from leukoview.primitives.tasks import TASKS

SPLITS = ("train", "val", "test")


class DatasetError(ValueError):
    """A dataset cannot be found or read; the message says where it was looked for."""


@dataclass(frozen=True)
class Dataset:
    """A labelled image collection and what is clinically positive in it."""

    name: str
    classes: tuple[str, ...]
    positive: tuple[str, ...]
    root: Path
    manifest: pd.DataFrame = field(repr=False, compare=False)
    licence: str = ""
    description: str = ""
    near_bits: int = 6  # perceptual-hash distance that counts as a near duplicate (see duplicate_groups)

    @property
    def has_patients(self) -> bool:
        return bool((self.manifest["patient"] != "").any())

    @property
    def has_sources(self) -> bool:
        return bool((self.manifest["source"] != "").any())


def _registered(name: str, root: Path, rows: list[dict], **extra) -> Dataset:
    """A registered task's dataset: classes, positive classes, licence and description from its registry entry."""
    t = TASKS[name]
    return Dataset(name, t.classes, t.positive, root, _manifest(rows), licence=t.licence, description=t.description,
                   **extra)


MANIFEST_COLUMNS = ["file", "label", "patient", "source_split", "source"]


def _manifest(rows: Iterable[dict]) -> pd.DataFrame:
    df = pd.DataFrame(list(rows), columns=MANIFEST_COLUMNS)
    return df.fillna("").sort_values("file", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------- known layouts

ALL4_FOLDERS = {"Benign": "Benign", "Early": "Early Pre-B", "Pre": "Pre-B", "Pro": "Pro-B"}
CNMC_PATIENT = re.compile(r"^UID_(H?\d+)_", re.IGNORECASE)


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what}: folder {path} not found. Set LEUKOVIEW_DATA_ROOT to the folder that holds it "
                           f"(currently {settings.data_root()}).")
    return path


def load_all4(root: Path) -> Dataset:
    base = _require_dir(root / "all4", "all4 (Taleqani ALL)")
    rows = []
    for folder, label in ALL4_FOLDERS.items():
        for p in find_images(_require_dir(base / folder, f"all4 class {folder}")):
            rows.append({"file": p.relative_to(root).as_posix(), "label": label, "patient": "", "source_split": ""})
    # measured: distances up to 10 pair only same-class images; 12 starts pairing across classes
    return _registered("all4", root, rows, near_bits=8)


def load_wbc5(root: Path) -> Dataset:
    base = _require_dir(root / "wbc5", "wbc5 (leukocytes, myeloblast)")
    rows = []
    for split_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        for label in TASKS["wbc5"].classes:
            cdir = split_dir / label
            if cdir.is_dir():
                for p in find_images(cdir):
                    rows.append({"file": p.relative_to(root).as_posix(), "label": label, "patient": "",
                                 "source_split": split_dir.name})
    if not rows:
        raise DatasetError(f"wbc5: no images under {base}/<split>/<class>/")
    # measured: single cells on flat backgrounds collide sooner; 8 bits already pairs 22 across classes
    return _registered("wbc5", root, rows, near_bits=4)


LMU_PREFIXES = ("MYO_", "NGS_")  # AML-Cytomorphology_LMU file names in wbc5; every other wbc5 image is PBC
PBC_EXTRA_FOLDERS = ("eosinophil", "ig", "lymphocyte", "neutrophil", "platelet")


def scanner_source(filename: str) -> str:
    """Which scanner a wbc5 / pbc_extra image comes from, by its file-name prefix: LMU or PBC."""
    return "LMU" if Path(filename).name.upper().startswith(LMU_PREFIXES) else "PBC"


def load_wbc9(root: Path) -> Dataset:
    """wbc5 and pbc_extra together: nine types from two scanners; wbc5's seg_neutrophil (LMU) and pbc_extra's
    neutrophil (PBC) are one class. The source of every image is kept for per-source metrics."""
    wbc5 = load_wbc5(root)
    base = _require_dir(root / "pbc_extra", "pbc_extra (PBC cell types missing from wbc5)")
    rows = [{**r, "label": "neutrophil" if r["label"] == "seg_neutrophil" else r["label"],
             "source": scanner_source(r["file"])} for r in wbc5.manifest.to_dict("records")]
    for label in PBC_EXTRA_FOLDERS:
        for p in find_images(_require_dir(base / label, f"pbc_extra class {label}")):
            rows.append({"file": p.relative_to(root).as_posix(), "label": label, "patient": "", "source_split": "",
                         "source": "PBC"})
    return _registered("wbc9", root, rows, near_bits=wbc5.near_bits)


DEEPAPL_TYPES = {"Blast, no lineage spec": "blast", "Lymphocyte": "lymphocyte", "Monocyte": "monocyte",
                 "Segmented neutrophils": "neutrophil", "Band neutrophils": "neutrophil", "Eosinophils": "eosinophil",
                 "Erythroblast": "erythroblast", "Basophil": "basophil"}
"""DeepAPL's signed cell types (folder names as published) -> the differential's classes: band and segmented
neutrophils are one class (as PBC's neutrophil folder holds both); the blasts are myeloid (AML / APL)."""


def _deepapl_rows(root: Path) -> list[dict]:
    base = _require_dir(root / "deepapl", "deepapl (Johns Hopkins AML/APL signed cells)")
    rows = []
    for patient in sorted(d for d in base.iterdir() if d.is_dir()):
        for folder, label in DEEPAPL_TYPES.items():
            if (patient / folder).is_dir():
                for p in find_images(patient / folder):
                    rows.append({"file": p.relative_to(root).as_posix(), "label": label, "patient": patient.name,
                                 "source_split": "", "source": "JHH"})
    if not rows:
        raise DatasetError(f"deepapl: no images under {base}/<Patient_XX>/<cell type>/")
    return rows


def load_deepapl(root: Path) -> Dataset:
    """DeepAPL (Johns Hopkins): signed cells of AML/APL patients, a folder per patient; types mapped by
    :data:`DEEPAPL_TYPES`; split by patient."""
    return _registered("deepapl", root, _deepapl_rows(root))


def load_diff3(root: Path) -> Dataset:
    """The three-laboratory differential: wbc9 (PBC + LMU) and DeepAPL (JHH). LMU myeloblasts and JHH blasts are
    one positive class, ``blast`` (myeloid blasts); the source of every image and JHH's patient ids are kept, so
    JHH is split by patient and the others by duplicate groups."""
    wbc9 = load_wbc9(root)
    rows = [{**r, "label": "blast" if r["label"] == "myeloblast" else r["label"]}
            for r in wbc9.manifest.to_dict("records")]
    return _registered("diff3", root, rows + _deepapl_rows(root), near_bits=wbc9.near_bits)


def cnmc_patient(filename: str) -> str:
    """Patient id from a C-NMC file name: ``UID_11_…`` -> ``11``, ``UID_H22_…`` -> ``H22``; '' if none."""
    m = CNMC_PATIENT.match(Path(filename).name)
    return m.group(1).upper() if m else ""


def find_cnmc_dir(root: Path) -> Path:
    """The C-NMC folder under ``root``: the Kaggle download, a ``cnmc`` folder or the shipped sample."""
    for name in ("C-NMC_Leukemia", "cnmc", "cnmc_sample"):
        if (root / name).is_dir():
            return root / name
    raise DatasetError(f"cnmc: none of C-NMC_Leukemia/, cnmc/, cnmc_sample/ found under {root}. Download the C-NMC "
                       "2019 set (Kaggle andrewmvd/leukemia-classification) and unpack it there.")


def load_cnmc(root: Path, folder: Path | None = None) -> Dataset:
    base = folder or find_cnmc_dir(root)
    rows = []
    # Kaggle layout: training_data/fold_*/{all,hem}; any folder holding all/ and hem/ works too.
    for label in ("hem", "all"):
        for cdir in sorted(d for d in base.rglob(label) if d.is_dir()):
            for p in find_images(cdir):
                fold = next((part for part in p.parts if part.startswith("fold_")), "")
                rows.append({"file": p.relative_to(root).as_posix(), "label": label,
                             "patient": cnmc_patient(p.name), "source_split": fold})
    if not rows:
        raise DatasetError(f"cnmc: no images in all/ and hem/ folders under {base}")
    return _registered("cnmc", root, rows)


def folder_dataset(folder: Path, positive: Iterable[str], *, root: Path | None = None, name: str = "") -> Dataset:
    """Any class-per-folder directory: each sub-folder is a class; ``positive`` names the positive classes."""
    folder = Path(folder).resolve()
    _require_dir(folder, "folder dataset")
    root = Path(root).resolve() if root else folder
    classes = tuple(sorted(d.name for d in folder.iterdir() if d.is_dir() and find_images(d)))
    if len(classes) < 2:
        raise DatasetError(f"{folder}: a class-per-folder dataset needs at least two sub-folders with images, "
                           f"found {list(classes)}")
    positive = tuple(positive)
    unknown = sorted(set(positive) - set(classes))
    if not positive or unknown:
        raise DatasetError(f"positive classes must be chosen among {list(classes)}; got {list(positive)}")
    rows = [{"file": p.relative_to(root).as_posix(), "label": c, "patient": "", "source_split": ""}
            for c in classes for p in find_images(folder / c)]
    return Dataset(name or folder.name, classes, positive, root, _manifest(rows), description=f"folder {folder}")


def evaluation_only_files(ds: Dataset, data_root: Path) -> list[str]:
    """The dataset's files that lie in an evaluation-only folder of ``data_root``
    (:data:`leukoview.primitives.settings.EVALUATION_ONLY`): none may be trained on."""
    shut = [str((Path(data_root) / name).resolve()) + os.sep for name in settings.EVALUATION_ONLY]
    base = Path(ds.root).resolve()
    return [f for f in ds.manifest["file"] if os.path.normpath(base / f).startswith(tuple(shut))]


LOADERS: dict[str, Callable[[Path], Dataset]] = {"all4": load_all4, "wbc5": load_wbc5, "wbc9": load_wbc9,
                                                 "cnmc": load_cnmc, "deepapl": load_deepapl, "diff3": load_diff3}


def load_dataset(name: str, root: Path | None = None, *, positive: Iterable[str] = ()) -> Dataset:
    """Load a registered dataset by name, or ``folder:<path>`` (path relative to the data root, or absolute)."""
    root = Path(root) if root else settings.data_root()
    if name.startswith("folder:"):
        path = Path(name.split(":", 1)[1])
        path = path if path.is_absolute() else root / path
        inside = path.resolve().is_relative_to(root.resolve())
        return folder_dataset(path, positive, root=root if inside else None, name=name)
    if name not in LOADERS:
        raise DatasetError(f"unknown dataset {name!r}; known: {sorted(LOADERS)} or folder:<path>")
    return LOADERS[name](root)
