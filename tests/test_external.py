"""External evaluation on a labelled folder from another source, and the differential count."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from leukoview.app import batch, compare, landing
from leukoview.audits import external
from leukoview.jobs.predict import Predictor, score_folder
from leukoview.models import bundle
from tests.conftest import make_class_folders


@pytest.fixture
def labelled(tmp_path):
    # the tiny bundle's classes are normal (kind 0) and blast (kind 3); "Other" is a type it never saw
    return make_class_folders(tmp_path / "otherlab", {"Normal": 0, "blast": 3, "Other": 1}, 6, seed=5)


def test_mapping_is_parsed_and_checked():
    assert external.parse_mapping(["Neutrophil=neutrophil", " A = b "]) == {"Neutrophil": "neutrophil", "A": "b"}
    with pytest.raises(ValueError, match="FOLDER=CLASS"):
        external.parse_mapping(["Neutrophil"])
    assert external.resolve_mapping(["Normal", "X"], ["normal", "blast"], {}) == {"Normal": "normal", "X": None}
    with pytest.raises(ValueError, match="not classes of this model"):
        external.resolve_mapping(["X"], ["normal", "blast"], {"X": "platelet"})


def test_external_eval_counts_what_the_predictor_says(tiny_bundle, labelled, tmp_path):
    folder = tmp_path / "b"
    shutil.copytree(tiny_bundle, folder)
    r = external.external_eval(folder, labelled)
    direct = score_folder(labelled, Predictor(folder))
    direct["folder"] = [f.split("/")[0] for f in direct["file"]]
    assert r["images"] == 18 and r["unseen_types"] == ["Other"] and r["mapping"]["Normal"] == "normal"
    normal = direct[direct["folder"] != "blast"]  # Normal and the unseen Other are normal cells
    assert r["normal_cells"] == len(normal) == 12
    threshold = Predictor(folder).threshold
    assert r["positive_decision_among_normal"]["count"] == int((normal["suspicion"] >= threshold).sum())
    own = direct[direct["folder"] == "Normal"]
    assert r["per_folder"]["Normal"]["own_type"]["count"] == int((own["predicted"] == "normal").sum())
    assert r["per_folder"]["Other"]["own_type"] is None
    assert sum(r["confusion"]["counts"]["blast"].values()) == 6
    lo, hi = r["per_folder"]["Normal"]["own_type"]["ci95"]
    assert lo <= r["per_folder"]["Normal"]["own_type"]["rate"] <= hi and hi - lo > 0.2  # 6 cells: a wide interval
    external.write(folder, "otherlab", r)
    external.write(folder, "second", r)
    b = bundle.load_bundle(folder)  # still verifies
    assert set(b.metrics["external"]) == {"otherlab", "second"}
    t = compare.external_table([b])
    assert list(t["external set"]) == ["otherlab", "second"] and t["Other own type"].isna().all()
    assert "of normal cells were called blast" in landing.model_summary(b)


def test_positive_folders_are_not_counted_as_normal(tiny_bundle, labelled):
    r = external.external_eval(tiny_bundle, labelled, positive_folders=("Other",))
    assert r["normal_cells"] == 6 and r["per_folder"]["Other"]["clinically_positive"]
    # the ranking of positive (blast, Other) against normal cells, checked against a direct computation
    from leukoview.primitives import metrics

    direct = score_folder(labelled, Predictor(tiny_bundle))
    y = (~direct["file"].str.startswith("Normal/")).astype(int).to_numpy()
    rk = r["positive_vs_normal"]
    assert rk["positive_cells"] == 12 and rk["normal_cells"] == 6 and rk["bootstrap_unit"] == "image"
    assert rk["roc_auc"]["value"] == pytest.approx(metrics.roc_auc(y, direct["suspicion"].to_numpy()))
    # a folder of positive cells with no class of its own is scored as positive, not listed as an unseen type
    assert r["unseen_types"] == [] and external.external_eval(tiny_bundle, labelled)["unseen_types"] == ["Other"]


def test_home_line_on_a_set_with_positive_cells_says_how_they_were_caught_and_ranked(tiny_bundle, labelled):
    """Home's one line on an external set with clinically positive cells gives the positive cells called positive
    and the ranking AUC with its interval, from the stored result; it does not call the positive folder a type the
    model was not trained on (results stored before that rule still list it: the line reads the folders)."""
    r = external.external_eval(tiny_bundle, labelled, positive_folders=("Other",))
    stored = {**r, "unseen_types": ["Other"]}  # as an older result recorded it
    line = landing.external_line(stored, "otherlab", "blast")
    pos = [f for f in ("blast", "Other") if r["per_folder"][f]["clinically_positive"]]
    k = sum(r["per_folder"][f]["positive_decision"]["count"] for f in pos)
    auc = r["positive_vs_normal"]["roc_auc"]
    assert f"of its positive cells were called positive ({k}/12)" in line
    assert f"ROC-AUC {auc['value']:.2f} [{auc['ci95'][0]:.2f}–{auc['ci95'][1]:.2f}]" in line
    assert "not trained on" not in line
    assert "not trained on: Other" in landing.external_line(external.external_eval(tiny_bundle, labelled),
                                                             "otherlab", "blast")


def test_external_ranking_resamples_patients_when_file_names_carry_them(tiny_bundle, tmp_path):
    rng = np.random.default_rng(4)
    from tests.conftest import cell_image

    for label, prefix, kind in (("all", "UID_", 3), ("hem", "UID_H", 0)):
        (tmp_path / "c" / label).mkdir(parents=True)
        for p in range(3):
            for c in range(2):
                cell_image(kind, rng).save(tmp_path / "c" / label / f"{prefix}{p}_{c}_1_{label}.png")
    r = external.external_eval(tiny_bundle, tmp_path / "c", mapping={"hem": "normal"}, positive_folders=("all",))
    rk = r["positive_vs_normal"]
    assert rk["bootstrap_unit"] == "patient" and rk["patients"] == 6


def test_differential_leaves_unidentified_cells_out_of_the_percentages():
    df = pd.DataFrame({"predicted": ["a", "a", "b", "blast", "blast", "a", "", ""],
                       "ood_flag": [False, False, False, False, True, True, "", ""],
                       "decision": ["negative"] * 3 + ["positive"] + ["cannot assess"] * 2
                       + ["not a blood-smear image", ""],
                       "error": ["", "", "", "", "", "", "", "unreadable"]})
    table, s = batch.differential(df, ["a", "b", "blast"], ["blast"])
    assert s["classed"] == 4 and s["unidentified"] == 2 and s["unreadable"] == 1 and s["not_a_smear"] == 1
    assert table.set_index("type").loc[["a", "b", "blast"], "count"].tolist() == [2, 1, 1]
    assert table.set_index("type").at["blast", "percent"] == pytest.approx(25.0)
    assert np.nansum(table["percent"]) == pytest.approx(100.0)
    assert s["positive_percent"] == pytest.approx(25.0) and s["at_or_above_reference"]
    _, low = batch.differential(df.assign(predicted=["a"] * 8), ["a", "b", "blast"], ["blast"])
    assert low["positive_percent"] == 0 and not low["at_or_above_reference"]
