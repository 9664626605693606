"""The per-patient differential and its agreement with a signed count (known answers)."""
import pandas as pd
import pytest

from leukoview.models import differential as D


@pytest.mark.parametrize("file, patient", [
    ("Patient_07/Blast, no lineage spec/a.jpg", "Patient_07"), ("x/patient-12/b.png", "patient-12"),
    ("UID_11_3_1_all.bmp", "11"), ("cells/blast/c.png", ""), ("case_3/slide 4/d.jpg", "slide 4")])
def test_patient_of_reads_names_and_patient_folders(file, patient):
    assert D.patient_of(file) == patient


def _scores():
    rows = []
    # P1: 10 cells, 3 blasts, 1 of the other cells flagged out of distribution -> 3 of 9 classed = 33.3 %
    rows += [{"file": f"P1/x{i}.jpg", "predicted": "blast"} for i in range(3)]
    rows += [{"file": f"P1/y{i}.jpg", "predicted": "lymphocyte"} for i in range(6)]
    rows += [{"file": "P1/z.jpg", "predicted": "lymphocyte", "decision": "cannot assess"}]
    # P2: 4 cells, no blast, one unreadable -> 0 of 3
    rows += [{"file": f"P2/y{i}.jpg", "predicted": "monocyte"} for i in range(3)]
    rows += [{"file": "P2/bad.jpg", "predicted": "", "error": "unreadable"}]
    df = pd.DataFrame(rows).fillna({"decision": "negative", "error": ""})
    return df.assign(file=df["file"].str.replace("P", "Patient_", regex=False))


def test_per_patient_blast_share_leaves_out_what_cannot_be_classed():
    t = D.per_patient(_scores(), ["blast"]).set_index("patient")
    assert t.loc["Patient_1", ["cells", "classed", "positive"]].tolist() == [10, 9, 3]
    assert t.loc["Patient_1", "positive_percent"] == pytest.approx(100 / 3)
    assert bool(t.loc["Patient_1", "at_or_above_line"]) and not bool(t.loc["Patient_2", "at_or_above_line"])
    assert t.loc["Patient_2", ["cells", "classed", "positive"]].tolist() == [4, 3, 0]
    assert D.per_patient(_scores().assign(file="flat.jpg"), ["blast"]).empty


def test_agreement_mae_bias_and_limits():
    predicted = pd.DataFrame({"patient": ["a", "b", "c", "d"], "cells": 10,
                              "positive_percent": [30.0, 10.0, 50.0, 0.0]})
    signed = pd.DataFrame({"patient": ["a", "b", "c", "d"], "signed_percent": [20.0, 15.0, 50.0, 5.0]})
    r = D.agreement(predicted, signed, n_boot=200)
    assert r["patients"] == 4 and r["mae_points"] == pytest.approx(5.0)  # |10| + |-5| + 0 + |-5| over 4
    assert r["bias_points"] == pytest.approx(0.0)
    diffs = [10, -5, 0, -5]
    sd = pd.Series(diffs).std()
    assert r["limits_of_agreement"] == pytest.approx([-1.96 * sd, 1.96 * sd])
    assert r["same_side_of_line"] == pytest.approx(1.0)  # a: 30 vs 20, both at or above the 20 % line
    assert r["mae_ci95"][0] <= 5.0 <= r["mae_ci95"][1] and r["mae_ci95"][1] - r["mae_ci95"][0] > 0
    with pytest.raises(ValueError, match="no patient"):
        D.agreement(predicted, signed.assign(patient=["w", "x", "y", "z"]))


def test_signed_counts_per_patient():
    labels = pd.DataFrame({"patient": ["a", "a", "a", "a", "b", ""], "label": ["blast", "blast", "lym", "mono",
                                                                             "lym", "blast"]})
    s = D.signed_counts(labels, ["blast"]).set_index("patient")["signed_percent"]
    assert s.to_dict() == {"a": 50.0, "b": 0.0}
