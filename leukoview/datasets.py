"""Datasets: scan a folder into a manifest (file, label, patient), and split it without leakage.

A manifest is a ``pandas.DataFrame`` with one row per image:
``file`` (POSIX path relative to the dataset's ``root``), ``label`` (class name), ``patient`` (string, empty when
unknown), ``source_split`` (the split the publisher shipped, empty when none) and ``source`` (the acquisition
source, e.g. the scanner, empty when the dataset has one).

Known layouts are the tasks of :data:`leukoview.tasks.TASKS`, each with its loader in :data:`LOADERS`; any
class-per-folder directory works through :func:`folder_dataset`. Files are found with
:func:`leukoview.images.find_images` (the project's one discovery rule).
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import settings
from .images import find_images
from .tasks import TASKS

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


# --------------------------------------------------------------------------------------------- duplicates


def perceptual_hash(image) -> int:
    """64-bit DCT perceptual hash (the pHash recipe): robust to re-encoding, resizing and small edits."""
    from scipy.fft import dctn

    gray = np.asarray(image.convert("L").resize((32, 32), 1), dtype=np.float64)  # 1 = LANCZOS
    low = dctn(gray, norm="ortho")[:8, :8].ravel()
    bits = low > np.median(low[1:])
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def file_hashes(path: Path) -> tuple[str, int]:
    from PIL import Image

    data = path.read_bytes()
    with Image.open(path) as im:
        return hashlib.sha256(data).hexdigest(), perceptual_hash(im)


def image_hashes(ds: Dataset, *, progress: bool = True) -> pd.DataFrame:
    """sha256 and perceptual hash of every file, cached under the cache dir (keyed by size and mtime)."""
    from tqdm import tqdm

    cache_file = settings.cache_dir() / f"hashes-{hashlib.sha1(str(ds.root).encode()).hexdigest()[:10]}.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    out, changed = [], False
    for file in tqdm(ds.manifest["file"], desc="hashing", unit="img", disable=not progress, leave=False):
        st = (ds.root / file).stat()
        key = f"{file}|{st.st_size}|{st.st_mtime_ns}"
        if key not in cache:
            sha, ph = file_hashes(ds.root / file)
            cache[key] = [sha, str(ph)]
            changed = True
        sha, ph = cache[key]
        out.append((file, sha, int(ph)))
    if changed:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(cache))
            tmp.replace(cache_file)
        except OSError:
            pass  # the cache only saves time
    return pd.DataFrame(out, columns=["file", "sha256", "phash"])


def hamming_pairs(hashes: np.ndarray, max_distance: int) -> list[tuple[int, int]]:
    """Index pairs (i < j) of 64-bit hashes at Hamming distance <= ``max_distance``."""
    h = np.asarray([int(x) for x in hashes], dtype=np.uint64)
    bytes_ = h.view(np.uint8).reshape(-1, 8)
    bits = np.unpackbits(bytes_, axis=1).astype(np.float32)  # n x 64
    pairs = []
    for start in range(0, len(h), 1024):
        block = bits[start:start + 1024]
        # Hamming distance = ones(a) + ones(b) - 2 * common ones
        dist = block.sum(1, keepdims=True) + bits.sum(1)[None, :] - 2 * block @ bits.T
        ii, jj = np.nonzero(dist <= max_distance + 0.5)
        ii = ii + start
        keep = ii < jj
        pairs.extend(zip(ii[keep].tolist(), jj[keep].tolist(), strict=False))
    return pairs


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def duplicate_groups(ds: Dataset, hashes: pd.DataFrame, *, near_bits: int | None = None) -> pd.DataFrame:
    """Group label per file: files that must stay on the same side of every split.

    Patients group their cells when ids exist. Exact duplicates (same sha256) are always grouped. Near
    duplicates (perceptual hash within ``near_bits`` of 64, default the dataset's) are grouped among the images
    whose patient is unknown: with patient ids the patient grouping already keeps near-copies together, and single
    segmented cells on black look alike across patients. A dataset mixing both (diff3) gets both rules. Returns columns
    file, group, exact_dup (bool), near_dup (bool).
    """
    near_bits = ds.near_bits if near_bits is None else near_bits
    m = ds.manifest.merge(hashes, on="file", how="left")
    uf = _UnionFind(len(m))
    exact = np.zeros(len(m), bool)
    near = np.zeros(len(m), bool)
    for _, idx in m.groupby("sha256").indices.items():
        if len(idx) > 1:
            exact[idx] = True
            for k in idx[1:]:
                uf.union(int(idx[0]), int(k))
    has_patient = (m["patient"] != "").to_numpy()
    for _, idx in m[has_patient].groupby("patient").indices.items():
        idx = np.flatnonzero(has_patient)[idx]
        for k in idx[1:]:
            uf.union(int(idx[0]), int(k))
    unknown = np.flatnonzero(~has_patient)  # images without a patient: near duplicates grouped among them
    if near_bits > 0 and len(unknown) > 1:
        for a, b in hamming_pairs(m["phash"].to_numpy()[unknown], near_bits):
            i, j = int(unknown[a]), int(unknown[b])
            if m.at[i, "sha256"] != m.at[j, "sha256"]:
                near[i] = near[j] = True
            uf.union(i, j)
    roots = [uf.find(i) for i in range(len(m))]
    return pd.DataFrame({"file": m["file"], "group": [f"g{r:05d}" for r in roots], "exact_dup": exact,
                         "near_dup": near})


def split_grouping(ds: Dataset) -> str:
    """How :func:`duplicate_groups` grouped ``ds`` before splitting, in words (for the card)."""
    with_patient = (ds.manifest["patient"] != "").to_numpy()
    near = f"exact duplicates (sha256) and near duplicates (perceptual hash <= {ds.near_bits} bits)"
    if with_patient.all():
        return "patient"
    if with_patient.any():
        return (f"patient where known ({int(with_patient.sum())} images); {near} for the "
                f"{int((~with_patient).sum())} images without a patient")
    return near


# --------------------------------------------------------------------------------------------- split


def grouped_split(labels: pd.Series, groups: pd.Series, *, fractions=(0.7, 0.15, 0.15), seed: int = 0,
                  strata: pd.Series | None = None) -> np.ndarray:
    """Assign whole groups to train/val/test so each class gets roughly ``fractions`` of its images.

    Groups are stratified by their majority label (and, with ``strata``, by each group's stratum too: a dataset that
    mixes patient groups with single images splits each kind by itself, so large patient groups are not all placed
    before the singles fill the other splits); within a stratum they are shuffled (seeded), placed largest first,
    each into the split furthest below its target.
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"label": labels.to_numpy(), "group": groups.to_numpy(),
                       "stratum": strata.to_numpy() if strata is not None else ""})
    info = df.groupby("group").agg(size=("label", "size"), label=("label", lambda s: s.mode().iloc[0]),
                                   stratum=("stratum", "first"))
    assignment: dict[str, str] = {}
    for _, sub in info.groupby(["label", "stratum"] if strata is not None else "label"):
        order = sub.index.to_numpy()[rng.permutation(len(sub))]
        order = sorted(order, key=lambda g: -sub.at[g, "size"])  # stable: ties keep the shuffled order
        total = sub["size"].sum()
        counts = np.zeros(3)
        for g in order:
            deficit = np.asarray(fractions) * total - counts
            k = int(np.argmax(deficit))
            assignment[g] = SPLITS[k]
            counts[k] += sub.at[g, "size"]
    return df["group"].map(assignment).to_numpy()


def make_split(ds: Dataset, *, seed: int = 0, fractions=(0.7, 0.15, 0.15), near_bits: int | None = None,
               progress: bool = True) -> pd.DataFrame:
    """The leakage-aware split of a dataset: manifest columns plus group, duplicate flags and split."""
    groups = duplicate_groups(ds, image_hashes(ds, progress=progress), near_bits=near_bits)
    df = ds.manifest.merge(groups, on="file")
    with_patient = df["patient"] != ""
    mixed = bool(with_patient.any() and (~with_patient).any())  # e.g. diff3: JHH patients beside PBC/LMU singles
    df["split"] = grouped_split(df["label"], df["group"], fractions=fractions, seed=seed,
                                strata=with_patient.map({True: "patient", False: "image"}) if mixed else None)
    return df


def split_hash(split: pd.DataFrame) -> str:
    """A short fingerprint of which file went to which split (order-independent)."""
    lines = sorted(f"{f},{s}" for f, s in zip(split["file"], split["split"], strict=False))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def leakage_audit(ds: Dataset, split: pd.DataFrame, *, hashes: pd.DataFrame | None = None) -> dict:
    """Duplicate groups, groups that cross splits (ours and the publisher's) and class balance."""
    hashes = hashes if hashes is not None else image_hashes(ds, progress=False)
    m = split.merge(hashes, on="file", how="left", suffixes=("", "_h"))
    exact_groups = [g for _, g in m.groupby("sha256") if len(g) > 1]
    cross_class = [sorted(g["file"]) for g in exact_groups if g["label"].nunique() > 1]
    multi = m.groupby("group").filter(lambda g: len(g) > 1)
    crossing = multi.groupby("group")["split"].nunique()
    report = {
        "dataset": ds.name,
        "images": int(len(m)),
        "patients": int(m.loc[m["patient"] != "", "patient"].nunique()),
        "exact_duplicate_groups": len(exact_groups),
        "exact_duplicate_examples": [sorted(g["file"])[:3] for g in exact_groups[:5]],
        "exact_duplicates_across_classes": cross_class,
        "near_duplicate_images": int(m["near_dup"].sum()) if "near_dup" in m else 0,
        "groups_of_two_or_more": int(multi["group"].nunique()),
        "largest_group": int(m.groupby("group").size().max()),
        "groups_crossing_our_split": int((crossing > 1).sum()),
        "class_balance": {s: {k: int(v) for k, v in m.loc[m["split"] == s, "label"].value_counts().sort_index()
                              .items()} for s in SPLITS},
    }
    if (m["source_split"] != "").any():
        pub = multi.groupby("group")["source_split"].nunique()
        report["groups_crossing_published_split"] = int((pub > 1).sum())
    if ds.has_patients:
        pp = m[m["patient"] != ""].groupby("patient")["split"].nunique()
        report["patients_in_more_than_one_split"] = int((pp > 1).sum())
    return report
