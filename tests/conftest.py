"""Shared fixtures: synthetic datasets and a tiny trained bundle in tmp folders; real-data detection."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def real_data_root() -> Path | None:
    """The real data root (LEUKOVIEW_DATA_ROOT, else ../shared/data beside the repo) if it holds the datasets."""
    env = os.environ.get("LEUKOVIEW_DATA_ROOT", "").split(os.pathsep)[0]
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (candidate / "all4").is_dir() and (candidate / "wbc5").is_dir():
            return candidate.resolve()
    return None


needs_real_data = pytest.mark.skipif(real_data_root() is None,
                                     reason="real data root not found (set LEUKOVIEW_DATA_ROOT to ../shared/data)")


def cell_image(kind: int, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """A synthetic 'smear': pink background with a dark blob whose size and hue depend on ``kind``."""
    yy, xx = np.mgrid[:size, :size]
    img = np.empty((size, size, 3), np.float32)
    img[:] = (230, 190, 200)
    cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
    r = size * (0.15 + 0.12 * kind) + rng.normal(0, 1)
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    img[mask] = (120 - 30 * kind, 60, 160 + 20 * kind)
    img += rng.normal(0, 6, img.shape)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def smear_array():
    """A 64x64 synthetic smear: pale background, one stained cell (20x20 at rows 20-39, columns 24-43) with a dark
    8x8 nucleus."""
    img = np.full((64, 64, 3), (235, 215, 220), np.uint8)
    img[20:40, 24:44] = (120, 50, 160)
    img[26:34, 30:38] = (60, 20, 110)
    return img


def make_class_folders(base: Path, classes: dict[str, int], n: int, seed: int = 0, suffix: str = ".png") -> Path:
    rng = np.random.default_rng(seed)
    for name, kind in classes.items():
        (base / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cell_image(kind, rng).save(base / name / f"{name}_{i:03d}{suffix}")
    return base


@pytest.fixture
def synthetic_root(tmp_path) -> Path:
    """A data root with all4-, wbc5- and C-NMC-style layouts of synthetic images."""
    root = tmp_path / "data"
    make_class_folders(root / "all4", {"Benign": 0, "Early": 1, "Pre": 2, "Pro": 3}, 6, seed=1, suffix=".jpg")
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        make_class_folders(root / "wbc5" / split, {c: k for k, c in enumerate(
            ["basophil", "erythroblast", "monocyte", "myeloblast", "seg_neutrophil"])}, n, seed=len(split))
    rng = np.random.default_rng(3)
    for label, prefix, kind in (("all", "UID_", 2), ("hem", "UID_H", 0)):
        d = root / "C-NMC_Leukemia" / "training_data" / "fold_0" / label
        d.mkdir(parents=True)
        for p in range(1, 5):
            for c in range(3):
                cell_image(kind, rng).save(d / f"{prefix}{p}_{c}_1_{label}.bmp")
    return root


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A cnn32 bundle trained for one epoch on a small synthetic two-class folder dataset."""
    from leukoview.jobs.train import TrainConfig, fit

    root = tmp_path_factory.mktemp("tinydata")
    make_class_folders(root / "cells", {"normal": 0, "blast": 3}, 24, seed=7)
    out = tmp_path_factory.mktemp("models") / "tiny"
    cfg = TrainConfig(dataset="folder:cells", positive=["blast"], arch="cnn32", data_root=str(root), out=str(out),
                      pretrained=False, epochs=2, batch_size=8, workers=0, input_size=64, n_boot=50, lr=3e-3,
                      ood_components=8)
    return fit(cfg, progress=False)
