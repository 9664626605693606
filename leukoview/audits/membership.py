"""The training-membership audit: the sha256 and perceptual hash of every train and validation image of the
bundle's split (:func:`leukoview.models.seen.seen_for`), stored in the bundle (``seen.json``) so that the app can
say when an image was in training."""
from __future__ import annotations

from pathlib import Path

from leukoview import audits
from leukoview.models.bundle import load_bundle
from leukoview.models.datasets import load_dataset
from leukoview.models.seen import seen_for


def run(bundle_path: Path, root: Path | None = None, *, progress: bool = True) -> dict:
    from leukoview.primitives import settings

    b = load_bundle(bundle_path)
    table = seen_for(load_dataset(b.task, Path(root) if root else settings.data_root()), b.split(),
                     progress=progress)
    audits.store(bundle_path, audits.SEEN_AUDIT, table)
    return table
