"""External evaluation: a bundle scored on a labelled folder from another source (another lab, camera, stain).

``python -m leukoview external FOLDER --bundle B [--map Neutrophil=neutrophil …] [--name bccd_wbc]`` scores every
class sub-folder of ``FOLDER`` through the shipped predictor (its cell-locating step, threshold and OOD flag
included), maps folder names to the model's classes (``--map``; otherwise a case-insensitive name match; folders
that match nothing are *unseen types*), and stores one entry per set under ``metrics.json["external"]`` through
:func:`leukoview.models.bundle.update`. Per folder class: how many cells are called their own type (recall, with a
Clopper-Pearson interval), positive decisions (false alarms among normal cells), positives without an OOD flag
(false alarms with no warning), the OOD flag rate and what the model calls them; overall, the confusion matrix and
the false-alarm rates over every normal cell. Never used for training, epoch selection or thresholds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from leukoview import audits
from leukoview.primitives import metrics
from leukoview.primitives.images import find_images


def parse_mapping(items: list[str] | None) -> dict[str, str]:
    """``["Neutrophil=neutrophil", …]`` -> ``{"Neutrophil": "neutrophil", …}``."""
    out = {}
    for item in items or []:
        folder, sep, cls = item.partition("=")
        if not sep or not folder.strip() or not cls.strip():
            raise ValueError(f"--map {item!r}: expected FOLDER=CLASS, e.g. Neutrophil=neutrophil")
        out[folder.strip()] = cls.strip()
    return out


def class_folders(folder: Path) -> dict[str, list[Path]]:
    """The labelled sets of ``folder``: each sub-folder holding images (searched recursively) is one class."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    sets = {d.name: find_images(d) for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    sets = {k: v for k, v in sets.items() if v}
    if not sets:
        raise ValueError(f"{folder}: no class sub-folders with images (expected FOLDER/<class>/<images>)")
    return sets


def resolve_mapping(folders: list[str], classes: list[str], mapping: dict[str, str]) -> dict[str, str | None]:
    """Model class of each folder: the explicit mapping, else a case-insensitive name match, else None (unseen)."""
    unknown = sorted(set(mapping.values()) - set(classes))
    if unknown:
        raise ValueError(f"--map names {unknown}, which are not classes of this model: {classes}")
    extra = sorted(set(mapping) - set(folders))
    if extra:
        raise ValueError(f"--map names folders {extra} that are not in the set: {folders}")
    lower = {c.lower(): c for c in classes}
    return {f: mapping.get(f, lower.get(f.lower())) for f in folders}


def _rate(k: int, n: int) -> dict:
    lo, hi = metrics.exact_ci(k, n) if n else (float("nan"), float("nan"))
    return {"count": int(k), "of": int(n), "rate": k / n if n else float("nan"), "ci95": [round(lo, 6), round(hi, 6)]}


def external_eval(bundle_path: Path, folder: Path, *, mapping: dict[str, str] | None = None,
                  positive_folders: tuple[str, ...] = (), progress=None) -> dict:
    """Score the labelled ``folder`` with the bundle; see the module docstring for what is returned."""
    from leukoview.jobs.predict import (  # torch loads here, not when a page reads the stored result
        Predictor,
        score_files,
    )

    p = Predictor(bundle_path)
    sets = class_folders(folder)
    mapped = resolve_mapping(list(sets), p.classes, mapping or {})
    paths = [q for files in sets.values() for q in files]
    df = score_files(paths, p, base=Path(folder), progress=progress)
    df["folder"] = [Path(f).parts[0] for f in df["file"]]
    ok = df[df["error"] == ""]
    positive_classes = set(p.bundle.positive)
    per_folder, confusion = {}, {}
    normal = np.zeros(len(ok), bool)
    for name in sets:
        g = ok[ok["folder"] == name]
        target = mapped[name]
        is_positive = target in positive_classes or name in positive_folders
        if not is_positive:
            normal |= (ok["folder"] == name).to_numpy()
        decision = (g["suspicion"] >= p.threshold).to_numpy()  # the score's call, flagged or not
        flag = (g["ood_flag"] == True).to_numpy()  # noqa: E712 (object column)
        counts = g["predicted"].value_counts()
        confusion[name] = {c: int(counts.get(c, 0)) for c in p.classes}
        per_folder[name] = {
            "images": int(len(g)), "mapped_to": target, "clinically_positive": bool(is_positive),
            "own_type": _rate(int((g["predicted"] == target).sum()), len(g)) if target else None,
            "positive_decision": _rate(int(decision.sum()), len(g)),
            "positive_not_flagged": _rate(int((decision & ~flag).sum()), len(g)),
            "ood_flagged": _rate(int(flag.sum()), len(g)),
            "top_prediction": counts.index[0] if len(counts) else "",
        }
    d = (ok["suspicion"] >= p.threshold).to_numpy()
    ranking = _ranking(ok, normal, p.threshold)
    f = (ok["ood_flag"] == True).to_numpy()  # noqa: E712
    seen = [n for n in sets if mapped[n]]
    own = ok[ok["folder"].isin(seen)]
    own_right = int((own["predicted"] == own["folder"].map(mapped)).sum())
    return {
        "folder": str(folder), "images": int(len(ok)), "unreadable": int((df["error"] != "").sum()),
        "not_a_smear": int((ok["gate"] != "").sum()),
        "threshold": p.threshold, "mapping": mapped,
        "unseen_types": unseen_types(per_folder),
        "normal_cells": int(normal.sum()),
        "positive_decision_among_normal": _rate(int(d[normal].sum()), int(normal.sum())),
        "positive_not_flagged_among_normal": _rate(int((d & ~f)[normal].sum()), int(normal.sum())),
        "own_type_overall": _rate(own_right, len(own)),
        "balanced_own_type": float(np.mean([per_folder[n]["own_type"]["rate"] for n in seen
                                            if per_folder[n]["images"]])) if seen else float("nan"),
        "ood_flag_rate": float(f.mean()) if len(f) else float("nan"),
        "per_folder": per_folder, "confusion": {"rows": "folder", "columns": p.classes, "counts": confusion},
        "positive_vs_normal": ranking,
        "reading": "own_type: share called the folder's own type (Clopper-Pearson 95%); positive_decision among "
                   "normal cells: false alarms at the shipped threshold; positive_not_flagged: false alarms that "
                   "carry no out-of-distribution warning",
    }


def unseen_types(per_folder: dict) -> list[str]:
    """Folders of normal cells of a type the model has no class for (a folder of clinically positive cells with no
    class of its own, such as C-NMC's ``all`` blasts for a subtype model, is not one: it is scored as positive)."""
    return [n for n, r in per_folder.items() if not r.get("mapped_to") and not r.get("clinically_positive")]


def _ranking(ok, normal: np.ndarray, threshold: float, *, n_boot: int = 1000) -> dict | None:
    """When the set holds clinically positive cells as well as normal ones: how the suspicion score separates them
    (ROC-AUC, sensitivity and specificity at the shipped threshold), with 95% bootstrap intervals that resample
    patients when the file names carry C-NMC patient ids (cells of one patient move together), else images."""
    from leukoview.models.datasets import cnmc_patient

    usable = ok["suspicion"].notna().to_numpy()  # gated images have no score
    y = (~normal)[usable].astype(int)
    s = ok["suspicion"].to_numpy(float)[usable]
    if not 0 < y.sum() < len(y):
        return None
    patients = np.asarray([cnmc_patient(f) for f in ok["file"]], dtype=object)[usable]
    groups = patients if (patients != "").all() else None

    def auc(i):
        return metrics.roc_auc(y[i], s[i]) if 0 < y[i].sum() < len(i) else float("nan")

    def sens(i):
        return float((s[i][y[i] == 1] >= threshold).mean()) if y[i].sum() else float("nan")

    def spec(i):
        return float((s[i][y[i] == 0] < threshold).mean()) if (y[i] == 0).sum() else float("nan")

    full = np.arange(len(y))
    return {"positive_cells": int(y.sum()), "normal_cells": int((y == 0).sum()),
            "patients": int(len(set(patients))) if groups is not None else None,
            "bootstrap_unit": "patient" if groups is not None else "image",
            **{name: {"value": fn(full), "ci95": list(metrics.bootstrap_ci(fn, len(y), groups=groups, n_boot=n_boot))}
               for name, fn in (("roc_auc", auc), ("sensitivity", sens), ("specificity", spec))}}


def write(bundle_path: Path, name: str, result: dict) -> None:
    """Add or replace the set ``name`` in the bundle's ``metrics.json["external"]``."""
    audits.store_named(bundle_path, audits.EXTERNAL, name, result)


def run(bundle_path: Path, folder: Path, *, name: str = "", mapping: dict[str, str] | None = None,
        positive_folders: tuple[str, ...] = (), progress=None) -> dict:
    """The audit's one entry: score the labelled ``folder`` (:func:`external_eval`) and store it as the set
    ``name`` (default: the folder's name) in the bundle (``metrics.json[external][name]``)."""
    r = external_eval(Path(bundle_path), Path(folder), mapping=mapping, positive_folders=positive_folders,
                      progress=progress)
    write(bundle_path, name or Path(folder).resolve().name, r)
    return r
