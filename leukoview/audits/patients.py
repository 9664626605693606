"""The per-patient audit: the blast % the model gives each test patient against the signed count
(:func:`leukoview.models.differential.bundle_agreement`: mean absolute error with an interval over patients,
Bland-Altman), overall and per source, stored in the bundle (``metrics.json[per_patient]``)."""
from __future__ import annotations

from pathlib import Path

from leukoview import audits
from leukoview.models import differential
from leukoview.models.bundle import load_bundle


def run(bundle_path: Path, root: Path | None = None, *, progress: bool = False) -> dict | None:
    """The audit's one entry (it reads the bundle's stored test predictions: ``root`` is not read). None, and
    nothing stored, when the test split has no patient ids."""
    b = load_bundle(bundle_path)
    r = differential.bundle_agreement(b)
    if r is None:
        return None
    sources = sorted(set(b.predictions().get("source", [])) - {""})
    per_source = {s: differential.bundle_agreement(b, source=s) for s in sources}
    r["per_source"] = {s: v for s, v in per_source.items() if v is not None and v["patients"] > 0}
    audits.store(bundle_path, audits.PATIENTS, r)
    return r
