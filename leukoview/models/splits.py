"""Splitting a dataset without leakage: exact and near duplicates (sha256 and a 64-bit perceptual hash) are grouped
with each other and with the patient or slide they come from, and whole groups go to train, val or test, stratified
by label. The split is saved with the model (``split.csv``) and identified by :func:`split_hash`;
:func:`leakage_audit` checks a split for files, hashes or patients shared across its parts.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from leukoview.models.datasets import SPLITS, Dataset
from leukoview.primitives import settings

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
