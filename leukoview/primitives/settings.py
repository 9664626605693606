"""Where leukoview finds data, models and reviewer decisions.

Every location comes from an environment variable with a repo-relative default, so that CI, a developer and a
lab install can point the same code at different folders without editing it.

- ``LEUKOVIEW_DATA_ROOT``: one or more dataset roots, separated by ``os.pathsep`` (default ``<repo>/data``).
  The first root is the one datasets are scanned from; the app may only browse inside these roots.
- ``LEUKOVIEW_MODELS_DIR``: the folder of model bundles (default ``<repo>/models``).
- ``LEUKOVIEW_REVIEW_DIR``: where reviewer decisions are stored (default ``<repo>/reviews``).
- ``LEUKOVIEW_CACHE_DIR``: derived, re-computable files such as image hashes (default ``<repo>/.cache``).
- ``LEUKOVIEW_SITE``: this laboratory's name, used for site adaptation (default ``local``).
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _path_from_env(name: str, default: Path) -> Path:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser().resolve() if value else default


def data_roots() -> list[Path]:
    """All configured data roots, in order (the first is the default one)."""
    value = os.environ.get("LEUKOVIEW_DATA_ROOT", "").strip()
    if not value:
        return [REPO_ROOT / "data"]
    return [Path(p).expanduser().resolve() for p in value.split(os.pathsep) if p.strip()]


# Folders of the data root that hold external evaluation sets: scored and audited, never trained on, used to select
# epochs or to fit a threshold (../shared/data/README; adaptation's BCCD learning curve is the one protocol that
# adapts on a fixed half of bccd_wbc, and it never touches a shipped model).
EVALUATION_ONLY = ("bccd_wbc", "cnmc_sample")


def data_root() -> Path:
    """The primary data root: datasets are looked up here."""
    return data_roots()[0]


def models_dir() -> Path:
    return _path_from_env("LEUKOVIEW_MODELS_DIR", REPO_ROOT / "models")


def review_dir() -> Path:
    return _path_from_env("LEUKOVIEW_REVIEW_DIR", REPO_ROOT / "reviews")


def site() -> str:
    """This laboratory's name (``LEUKOVIEW_SITE``; letters, digits, - and _ kept)."""
    name = "".join(ch for ch in os.environ.get("LEUKOVIEW_SITE", "local") if ch.isalnum() or ch in "-_")
    return name or "local"


def cache_dir() -> Path:
    return _path_from_env("LEUKOVIEW_CACHE_DIR", REPO_ROOT / ".cache")


def sample_dir() -> Path:
    return REPO_ROOT / "sample_data"
