"""Sample images for the app: a tracked manifest (dataset, file relative to the data root, class, licence) and
a command that copies the listed files from the data root into ``sample_data/`` (the copies are not tracked)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from leukoview.primitives import settings

MANIFEST = "manifest.csv"
COLUMNS = ["dataset", "file", "label", "licence"]


def read_manifest(folder: Path | None = None) -> pd.DataFrame:
    folder = folder or settings.sample_dir()
    path = folder / MANIFEST
    if not path.is_file():
        return pd.DataFrame(columns=COLUMNS)
    return pd.read_csv(path, keep_default_na=False)


def local_path(row, folder: Path | None = None) -> Path:
    """Where a manifest row's copy lives: sample_data/<file relative to the data root>."""
    return (folder or settings.sample_dir()) / row["file"]


def fill_sample_data(root: Path | None = None, folder: Path | None = None) -> tuple[int, list[str]]:
    """Copy every manifest file from the data root; returns (copied, files missing from the data root)."""
    root = root or settings.data_root()
    folder = folder or settings.sample_dir()
    copied, missing = 0, []
    for _, row in read_manifest(folder).iterrows():
        src = (root / row["file"]).resolve()
        if not src.is_relative_to(root.resolve()) or not src.is_file():
            missing.append(row["file"])
            continue
        dst = local_path(row, folder)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        copied += 1
    return copied, missing


def available_samples(folder: Path | None = None) -> pd.DataFrame:
    """Manifest rows whose image has been copied into sample_data/, with a ``path`` column."""
    m = read_manifest(folder)
    if m.empty:
        return m.assign(path=[])
    m["path"] = [local_path(r, folder) for _, r in m.iterrows()]
    return m[[p.is_file() for p in m["path"]]].reset_index(drop=True)


def make_manifest(splits: dict[str, pd.DataFrame], licences: dict[str, str], per_class: int, seed: int = 0
                  ) -> pd.DataFrame:
    """Pick ``per_class`` test-split images of each class of each dataset (so the app's samples were never
    trained on). ``splits`` maps a dataset name to its saved split table."""
    rows = []
    for name, split in splits.items():
        test = split[split["split"] == "test"] if "split" in split else split
        for label, g in test.groupby("label"):
            for f in g.sample(min(per_class, len(g)), random_state=seed)["file"]:
                rows.append({"dataset": name, "file": f, "label": label, "licence": licences.get(name, "")})
    return pd.DataFrame(rows, columns=COLUMNS)


def write_manifest(*, per_class: int = 3, unshipped_per_class: int = 5, seed: int = 0) -> Path:
    """Re-pick ``sample_data/manifest.csv`` for every registered task (:data:`leukoview.primitives.tasks.TASKS`): the
    test split of a shipped bundle of that task (``per_class`` per class), else cells from the dataset in the data root
    split the same leakage-aware way (``unshipped_per_class``), so the app's samples were never trained on. Tasks
    whose dataset is not in the data root are skipped."""
    from leukoview.models.bundle import list_bundles
    from leukoview.models.datasets import load_dataset
    from leukoview.models.splits import make_split
    from leukoview.primitives.tasks import TASKS

    shipped = {}
    for b in list_bundles():
        shipped.setdefault(b.task, b)
    parts = []
    for task in TASKS:
        if task in shipped:
            b = shipped[task]
            parts.append(make_manifest({task: b.split()}, {task: b.card.dataset.get("licence", "")}, per_class,
                                       seed))
            continue
        try:
            ds = load_dataset(task)
        except (ValueError, OSError):
            continue  # not in the data root
        parts.append(make_manifest({task: make_split(ds, progress=False)}, {task: ds.licence}, unshipped_per_class,
                                   seed))
    manifest = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)
    path = settings.sample_dir() / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(path, index=False)
    return path
