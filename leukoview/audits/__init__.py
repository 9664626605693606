"""Every audit of a bundle in one registry: its name (the CLI command), what it measures, the module of this
folder whose ``run(bundle_path, ...)`` runs it and stores its result, and where that result lives in the bundle
(one ``metrics.json`` key, or one JSON file recorded in the card). Results are written through
:func:`store`, the one writer (it goes through :func:`leukoview.models.bundle.update`, so the card re-records every
sha256), and read through :func:`result`. The CLI's help, the comparison tables and the comparison page's
"audits run" table all read this registry; no audit stores anything outside its bundle.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from leukoview.models import bundle


@dataclass(frozen=True)
class Audit:
    name: str  # the CLI command that runs it
    what: str  # one line: what it measures
    module: str  # leukoview.audits.<module>.run(bundle_path, ...) runs it, stores the result and returns it
    key: str = ""  # its metrics.json key ...
    file: str = ""  # ... or its JSON file in the bundle
    options: tuple[tuple[str, object], ...] = ()  # what its run is always called with (shift-val: the val split)

    @property
    def where(self) -> str:
        return f"metrics.json[{self.key}]" if self.key else self.file

    def run(self, bundle_path: Path | str, *args, **options):
        """Run the audit on a bundle and store its result there (its module's ``run``); returns the result."""
        from importlib import import_module

        runner = import_module(f"{__name__}.{self.module}").run
        return runner(Path(bundle_path), *args, **{**dict(self.options), **options})


SHIFT = Audit("shift", "the test split re-rendered under stain, background, scale, blur, JPEG and greyscale shifts",
              "shift", key="shift")
SHIFT_VAL = Audit("shift-val", "the same shift test on the validation split (for choosing recipes)", "shift",
                  key="shift_val", options=(("split", "val"),))
OOD_EVAL = Audit("oodeval", "the OOD flag and the input gate on non-cell images and other datasets' cells",
                 "oodeval", key="ood_eval")
OOD_SCORES = Audit("oodscores", "OOD scores compared (Mahalanobis, kNN, energy, MSP) on the OOD sets", "oodscores",
                   key="ood_compare")
EXTERNAL = Audit("external", "labelled folders from other laboratories, one entry per set", "external",
                 key="external")
SHORTCUTS = Audit("shortcuts", "how well non-cell cues alone (size, JPEG, border, corners, background) classify the "
                  "test split", "shortcuts", key="shortcuts")
CAM_STATS = Audit("camstats", "Grad-CAM mass on stained cells vs background and corners over the test split",
                  "camstats", file=bundle.CAM_STATS)
LATENCY = Audit("measure", "CPU latency per image", "latency", file=bundle.LATENCY)
WRONG_TASK = Audit("wrongtask", "the wrong-task detector (own training images vs other datasets' images)",
                   "wrongtask", file=bundle.WRONG_TASK_INFO)
PALETTE = Audit("palette", "the palette check (colour histograms against the own training images)", "palette",
                file=bundle.PALETTE_INFO)
PATIENTS = Audit("patients", "per-patient blast % on the test split against the signed count (mean absolute "
                 "error, Bland-Altman), overall and per source", "patients", key="per_patient")
SEEN_AUDIT = Audit("seen", "training-set membership (hashes of the train and validation images)", "membership",
                   file=bundle.SEEN)

REGISTRY: dict[str, Audit] = {a.name: a for a in (SHIFT, SHIFT_VAL, OOD_EVAL, OOD_SCORES, EXTERNAL, SHORTCUTS,
                                                  CAM_STATS, LATENCY, WRONG_TASK, PALETTE, PATIENTS, SEEN_AUDIT)}


def store(folder: Path | str, audit: Audit, result: dict, *, files: dict[str, object] | None = None) -> dict:
    """Write an audit's result into its bundle (and any ``files`` it needs beside it, e.g. arrays). Returns the
    new card."""
    if audit.key:
        return bundle.update(folder, metrics={audit.key: result}, files=files)
    return bundle.update(folder, files={**(files or {}), audit.file: result})


def result(b: bundle.Bundle, audit: Audit, default=None):
    """An audit's stored result in bundle ``b`` (``default`` when it was not run)."""
    if audit.key:
        return b.metrics.get(audit.key, default)
    return b.json_file(audit.file, default)


def store_named(folder: Path | str, audit: Audit, name: str, entry: dict) -> dict:
    """Add or replace one named entry of an audit whose result is a dict of entries (external sets)."""
    current = dict(result(bundle.load_bundle(folder), audit, {}) or {})
    current[name] = entry
    return store(folder, audit, current)


def run_table(bundles: list[bundle.Bundle]) -> list[dict]:
    """Which audits each bundle has: one row per bundle, a column per audit (for the comparison page)."""
    return [{"model": b.id, **{a.name: result(b, a) is not None for a in REGISTRY.values()}} for b in bundles]
