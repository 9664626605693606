"""A laboratory's confirmed cells for site adaptation (:mod:`leukoview.jobs.adapt`): read from a class-per-folder
directory or from the review store's signed-off slides, counted per type, checked for enough of each type, and split
into an *adapt* and an *evaluate* part by slide or patient (never one on both sides), else stratified by type.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from leukoview.primitives.images import find_images

MIN_PER_TYPE = 5  # adapt cells a type needs (and as many again to evaluate it); fewer: refused, with the count
EVAL_FRACTION = 0.5


class AdaptError(ValueError):
    """The site's cells cannot adapt this bundle; the message says why and what is needed."""


def site_from_folder(folder: Path, classes: list[str], *, mapping: dict[str, str] | None = None) -> pd.DataFrame:
    """A class-per-folder directory as site cells (columns file, label, group). Folder names match the model's
    classes case-insensitively or through ``mapping``; other folders are left out. ``group``: the patient or slide
    folder when the paths carry one (:func:`leukoview.models.differential.patient_of`)."""
    from leukoview.models.differential import patient_of

    folder = Path(folder)
    if not folder.is_dir():
        raise AdaptError(f"{folder}: not a folder")
    lower = {c.lower(): c for c in classes}
    mapping = {k.lower(): v for k, v in (mapping or {}).items()}
    rows = []
    for sub in sorted(d for d in folder.iterdir() if d.is_dir()):
        label = mapping.get(sub.name.lower()) or lower.get(sub.name.lower())
        if label is None:
            continue
        for p in find_images(sub):
            rows.append({"file": str(p), "label": label, "group": patient_of(str(p.relative_to(folder)))})
    return pd.DataFrame(rows, columns=["file", "label", "group"])


def site_from_reviews(store, classes: list[str]) -> pd.DataFrame:
    """The reviewed cells of every signed-off slide in the review store: a confirmed cell keeps the model's class,
    an overridden one takes the reviewer's; unidentified cells and cells sent to second review are left out.
    ``group`` is the slide (the batch)."""
    rows = []
    for batch_id, folder in store.signed_batches():
        latest = store.latest(batch_id)
        for r in latest.to_dict("records"):
            if r["action"] in ("confirm", "override") and r["label"] in classes:
                rows.append({"file": str(Path(folder) / r["file"]), "label": r["label"], "group": batch_id})
    return pd.DataFrame(rows, columns=["file", "label", "group"])


def counts_per_type(cells: pd.DataFrame, classes: list[str]) -> dict[str, int]:
    return {c: int((cells["label"] == c).sum()) for c in classes if (cells["label"] == c).any()}


def check_enough(cells: pd.DataFrame, classes: list[str], *, min_per_type: int = MIN_PER_TYPE) -> list[str]:
    """The types the site has enough cells of (at least 2 x ``min_per_type``: half adapt, half evaluate). Raises
    :class:`AdaptError` naming what is missing when fewer than two types qualify."""
    counts = counts_per_type(cells, classes)
    enough = [c for c, n in counts.items() if n >= 2 * min_per_type]
    if len(enough) < 2:
        have = ", ".join(f"{c} {n}" for c, n in counts.items()) or "none"
        raise AdaptError(f"too few confirmed cells to adapt: each type needs at least {2 * min_per_type} "
                         f"({min_per_type} to adapt on, {min_per_type} to check on), and at least two types need "
                         f"that many; the site has {have}")
    return enough


def split_site(cells: pd.DataFrame, *, seed: int = 0, eval_fraction: float = EVAL_FRACTION) -> pd.DataFrame:
    """Adds ``part`` (adapt / evaluate). Cells with a group (slide or patient) keep their group on one side when
    there are at least four groups; the rest are split per type, seeded."""
    rng = np.random.default_rng(seed)
    out = cells.copy()
    out["part"] = ""
    grouped = out["group"].astype(str) != ""
    groups = sorted(out.loc[grouped, "group"].astype(str).unique())
    if len(groups) >= 4:
        order = [groups[i] for i in rng.permutation(len(groups))]
        to_eval = set(order[: max(1, int(round(eval_fraction * len(order))))])
        out.loc[grouped, "part"] = np.where(out.loc[grouped, "group"].astype(str).isin(to_eval), "evaluate", "adapt")
    rest = out["part"] == ""
    for _, idx in out[rest].groupby("label").groups.items():
        idx = np.asarray(idx)[rng.permutation(len(idx))]
        n_eval = int(round(eval_fraction * len(idx)))
        out.loc[idx[:n_eval], "part"] = "evaluate"
        out.loc[idx[n_eval:], "part"] = "adapt"
    return out


def in_parts(cells: pd.DataFrame, classes: list[str], *, min_per_type: int = MIN_PER_TYPE, seed: int = 0,
             model: str = "the model") -> pd.DataFrame:
    """The site's cells of the types with enough of them, each marked ``part`` adapt or evaluate: split here
    (:func:`split_site`), or kept as given when the cells already carry a ``part`` (a protocol that fixed the parts
    itself, e.g. the BCCD learning curve). Raises :class:`AdaptError` saying what is missing."""
    unknown = sorted(set(cells["label"]) - set(classes))
    if unknown:
        raise AdaptError(f"labels {unknown} are not classes of {model} ({', '.join(classes)})")
    if "part" not in cells.columns:
        types = check_enough(cells, classes, min_per_type=min_per_type)
        return split_site(cells[cells["label"].isin(types)].reset_index(drop=True), seed=seed)
    if not set(cells["part"]) <= {"adapt", "evaluate"}:
        raise AdaptError("part must be 'adapt' or 'evaluate'")
    counts = counts_per_type(cells[cells["part"] == "adapt"], classes)
    types = [c for c, n in counts.items() if n >= min_per_type]
    if len(types) < 2:
        raise AdaptError(f"too few cells to adapt on: at least {min_per_type} per type, for two types or more; "
                         f"the adapt part has {counts}")
    return cells[cells["label"].isin(types)].reset_index(drop=True)
