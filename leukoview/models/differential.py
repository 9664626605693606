"""The per-patient (per-slide) differential: each patient's blast share against the 20% line, and its agreement
with a laboratory's signed count (mean absolute error, Bland-Altman), as a laboratory validates a cell counter.

Patients are read from the image paths: a C-NMC style file name (``UID_<p>_…``) or a folder per patient
(``Patient_07/…``, ``patient-12/…``, ``case_3/…``, ``slide 4/…``). No Streamlit, no torch.
"""
from __future__ import annotations

import re
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from leukoview.models.datasets import cnmc_patient
from leukoview.primitives.metrics import bootstrap_ci
from leukoview.primitives.segment import NOT_A_SMEAR
from leukoview.primitives.vocab import CANNOT_ASSESS

REFERENCE = 0.20  # the WHO blast line for acute leukaemia (>= 20 % blasts)
PATIENT_FOLDER = re.compile(r"^(patient|pt|case|slide)[ _-]?[A-Za-z0-9]+$", re.IGNORECASE)
COLUMNS = ["patient", "cells", "classed", "positive", "positive_percent", "at_or_above_line"]


def patient_of(file: str) -> str:
    """The patient an image belongs to, from its relative path: a C-NMC file name's id, else the nearest folder
    named like a patient (``Patient_07``), else ''."""
    path = PurePosixPath(str(file).replace("\\", "/"))
    pid = cnmc_patient(path.name)
    if pid:
        return pid
    for part in reversed(path.parts[:-1]):
        if PATIENT_FOLDER.match(part):
            return part
    return ""


def cells(df: pd.DataFrame) -> pd.Series:
    """Rows of a scored table that are cells: readable and not refused by the input gate."""
    ok = pd.Series(True, index=df.index)
    if "error" in df:
        ok &= df["error"].astype(str).eq("")
    if "decision" in df:
        ok &= df["decision"] != NOT_A_SMEAR
    return ok


def flagged(df: pd.DataFrame) -> pd.Series:
    """Rows the model gives no verdict: out of distribution (or the wrong kind of image), 'cannot assess'. Such a
    cell is *unidentified* in a differential and left out of its percentages."""
    out = pd.Series(False, index=df.index)
    if "ood_flag" in df:
        out |= df["ood_flag"].astype(str).eq("True")
    if "decision" in df:
        out |= df["decision"] == CANNOT_ASSESS
    return out


def _classed(df: pd.DataFrame) -> np.ndarray:
    """Cells that count in a differential's percentages."""
    return (cells(df) & ~flagged(df)).to_numpy()


def per_patient(scores: pd.DataFrame, positive: list[str], *, reference: float = REFERENCE,
                patients: pd.Series | None = None) -> pd.DataFrame:
    """Per patient: cells, classed cells (left out: unreadable, out-of-distribution, cannot assess), cells
    pre-classified as a positive type, their % of the classed cells and whether it reaches ``reference``.
    ``patients``: the patient of each row (default: read from the ``file`` column). Empty when no row has one."""
    pid = patients if patients is not None else scores["file"].map(patient_of)
    df = scores.assign(_patient=pid.astype(str).to_numpy(), _classed=_classed(scores),
                       _pos=scores["predicted"].isin(positive).to_numpy())
    df = df[df["_patient"] != ""]
    if df.empty:
        return pd.DataFrame(columns=COLUMNS)
    g = df.groupby("_patient").agg(cells=("_patient", "size"), classed=("_classed", "sum"),
                                   positive=("_pos", lambda s: int(s[df.loc[s.index, "_classed"]].sum())))
    g["positive_percent"] = np.where(g["classed"] > 0, 100 * g["positive"] / g["classed"].clip(lower=1), np.nan)
    g["at_or_above_line"] = g["positive_percent"] >= 100 * reference
    return g.rename_axis("patient").reset_index()[COLUMNS]


def agreement(predicted: pd.DataFrame, signed: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0,
              reference: float = REFERENCE) -> dict:
    """Counter agreement per patient: ``predicted`` from :func:`per_patient`, ``signed`` with columns patient and
    signed_percent (the laboratory's count). Mean absolute error (with a bootstrap interval over patients), the
    Bland-Altman bias and 95% limits of agreement, how often both sides fall on the same side of the line, and the
    rows for a plot."""
    m = predicted.merge(signed, on="patient", how="inner").dropna(subset=["positive_percent", "signed_percent"])
    if m.empty:
        raise ValueError("no patient has both a predicted and a signed count")
    diff = (m["positive_percent"] - m["signed_percent"]).to_numpy(float)
    mean = ((m["positive_percent"] + m["signed_percent"]) / 2).to_numpy(float)
    err = np.abs(diff)
    lo, hi = bootstrap_ci(lambda i: float(err[i].mean()), len(err), n_boot=n_boot, seed=seed)
    sd = float(diff.std(ddof=1)) if len(diff) > 1 else float("nan")
    line = 100 * reference
    same_side = (m["positive_percent"] >= line) == (m["signed_percent"] >= line)
    return {"patients": int(len(m)), "mae_points": float(err.mean()), "mae_ci95": [round(lo, 4), round(hi, 4)],
            "bias_points": float(diff.mean()), "limits_of_agreement": [float(diff.mean() - 1.96 * sd),
                                                                       float(diff.mean() + 1.96 * sd)],
            "same_side_of_line": float(same_side.mean()), "reference_percent": line,
            "rows": [{"patient": p, "cells": int(c), "signed_percent": round(float(s), 3),
                      "predicted_percent": round(float(q), 3), "mean": round(float(a), 3),
                      "difference": round(float(d), 3)}
                     for p, c, s, q, a, d in zip(m["patient"], m["cells"], m["signed_percent"],
                                                 m["positive_percent"], mean, diff, strict=True)]}


def signed_counts(labels: pd.DataFrame, positive: list[str]) -> pd.DataFrame:
    """The laboratory's count per patient from labelled rows (columns patient, label): % of positive types."""
    df = labels[labels["patient"].astype(str) != ""]
    g = df.groupby("patient")["label"].agg(lambda s: 100 * float(s.isin(positive).mean()))
    return g.rename("signed_percent").reset_index()


def bundle_agreement(b, *, source: str = "", n_boot: int = 1000) -> dict | None:
    """Agreement of a bundle's test split with the signed labels, per patient (only rows with a patient id;
    ``source`` restricts to one acquisition source). None when the test split has no patients."""
    pred = b.predictions()
    if source and "source" in pred:
        pred = pred[pred["source"] == source]
    if "patient" not in pred or not (pred["patient"].astype(str) != "").any():
        return None
    pats = pred["patient"].astype(str)
    flagged = pred["ood_score"] > b.card.ood_threshold if "ood_score" in pred else False
    predicted = per_patient(pred.assign(ood_flag=flagged), b.positive, patients=pats)
    out = agreement(predicted, signed_counts(pred, b.positive), n_boot=n_boot)
    return {**out, "split": "test", "source": source or "all", "counted": "cells pre-classified as "
            + " / ".join(b.positive) + " among the classed cells (out-of-distribution cells left out)",
            "signed": "the share of the patient's test cells signed as " + " / ".join(b.positive)}
