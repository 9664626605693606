"""The cell-review workflow's library part: queue order, pages, keys, the differential before and after review,
sign-offs in the store and the report."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from leukoview.app import gallery, report
from leukoview.app.review import Decision, ReviewStore, SignOff, StaleSignOffError
from leukoview.primitives.vocab import FLAGGED_UNIDENTIFIED as UNIDENTIFIED

CLASSES = ["lymphocyte", "myeloblast", "neutrophil"]
POSITIVE = ["myeloblast"]


def scores(rows):
    """rows: (file, predicted, suspicion, ood_flag)."""
    return pd.DataFrame([{"file": f, "predicted": p, "suspicion": s, "ood_flag": o,
                          "decision": "cannot assess" if o else ("positive" if s >= 0.5 else "negative"),
                          "in_training": "", "gate": "", "error": ""} for f, p, s, o in rows])


@pytest.fixture
def queue():
    df = scores([("a.png", "neutrophil", 0.10, False), ("b.png", "myeloblast", 0.70, False),
                 ("c.png", "myeloblast", 0.95, False), ("d.png", "lymphocyte", 0.20, False),
                 ("e.png", "neutrophil", 0.99, True), ("f.png", "lymphocyte", 0.05, False)])
    err = pd.DataFrame([{"file": "bad.png", "predicted": "", "suspicion": np.nan, "ood_flag": "", "decision": "",
                         "in_training": "", "gate": "", "error": "unreadable"}])
    return gallery.review_queue(pd.concat([df, err]), CLASSES, POSITIVE)


def test_queue_puts_positive_types_first_unidentified_last_most_suspicious_first(queue):
    assert queue["file"].tolist() == ["c.png", "b.png", "d.png", "f.png", "a.png", "e.png"]
    assert queue["group"].tolist() == ["myeloblast", "myeloblast", "lymphocyte", "lymphocyte", "neutrophil",
                                       UNIDENTIFIED]


def test_pages_keep_queue_positions_and_clamp():
    q = pd.DataFrame({"file": [f"{i}.png" for i in range(250)]})
    assert gallery.page_count(250, 100) == 3 and gallery.page_count(0, 100) == 1
    last = gallery.gallery_page(q, 9, 100)  # past the end: the last page
    assert last["pos"].tolist() == list(range(200, 250)) and last["file"].iloc[0] == "200.png"
    assert gallery.page_of(199, 100) == 2 and gallery.page_of(200, 100) == 3


def test_every_key_maps_to_an_action_or_a_move():
    row = {"predicted": "myeloblast"}
    seen = {k.id: gallery.action_for(k.id, row, CLASSES) for k in gallery.key_map(CLASSES)}
    assert seen["next"] is None and seen["previous"] is None
    assert seen["confirm"] == ("confirm", "myeloblast")
    assert seen["unidentified"] == ("override", "unidentified")
    assert seen["second_review"] == ("second_review", "")
    assert seen["class:0"] == ("override", "lymphocyte")
    assert seen["class:1"] == ("confirm", "myeloblast")  # reclassified to its own class: a confirmation
    assert [k.key for k in gallery.key_map(CLASSES) if k.id.startswith("class:")] == ["1", "2", "3"]
    with pytest.raises(ValueError):
        gallery.action_for("delete", row, CLASSES)


def test_step_moves_and_holds_at_the_ends():
    assert gallery.step(0, 5, "previous") == 0 and gallery.step(4, 5, "next") == 4
    assert gallery.step(2, 5, "confirm") == 3 and gallery.step(2, 5, "previous") == 1
    assert gallery.step(0, 0, "next") == 0


def decisions(rows):
    return pd.DataFrame([{"id": i + 1, "file": f, "action": a, "label": lab, "reviewer": "r"}
                         for i, (f, a, lab) in enumerate(rows)])


def test_differential_before_and_after_review(queue):
    d = decisions([("c.png", "confirm", "myeloblast"), ("b.png", "override", "lymphocyte"),
                   ("d.png", "override", "unidentified"), ("a.png", "second_review", ""),
                   ("e.png", "override", "myeloblast")])  # an OOD cell the reviewer placed
    table, s = gallery.review_differential(queue, d, CLASSES, POSITIVE)
    t = table.set_index("type")
    # pre-classified: 5 classed cells (e is OOD): 2 myeloblast, 2 lymphocyte, 1 neutrophil
    assert t.loc["myeloblast", "pre-classified"] == 2 and t.loc["myeloblast", "pre %"] == pytest.approx(40.0)
    assert t.loc[UNIDENTIFIED, "pre-classified"] == 1 and np.isnan(t.loc[UNIDENTIFIED, "pre %"])
    # reviewed: c, e myeloblast; b lymphocyte; d unidentified; a pending; f not reviewed -> 3 classed
    assert t.loc["myeloblast", "reviewed"] == 2 and t.loc["myeloblast", "reviewed %"] == pytest.approx(200 / 3)
    assert t.loc["lymphocyte", "reviewed"] == 1 and t.loc["neutrophil", "reviewed"] == 0
    assert t.loc[UNIDENTIFIED, "reviewed"] == 1 and t.loc[gallery.PENDING, "reviewed"] == 1
    assert t.loc[gallery.NOT_REVIEWED, "reviewed"] == 1
    assert s["cells"] == 6 and s["reviewed"] == 5 and s["pending"] == 1
    assert s["positive_percent_pre"] == pytest.approx(40.0)
    assert s["positive_percent_reviewed"] == pytest.approx(200 / 3)
    stored = json.loads(gallery.differential_json(table))
    assert stored[0]["type"] == "lymphocyte" and stored[-1]["reviewed %"] is None
    assert gallery.compact(table).set_index("type").loc["myeloblast", "pre-classified"] == "2 (40.0%)"


def test_badges_say_what_a_reviewer_needs(queue):
    rows = {r["file"]: r for r in queue.to_dict("records")}
    assert gallery.badges(rows["e.png"], None) == ["OOD"]
    assert gallery.badges(rows["b.png"], {"action": "override", "label": "lymphocyte"}) == ["→ lymphocyte"]
    assert gallery.badges(rows["c.png"], {"action": "confirm", "label": "myeloblast"}) == ["✓"]
    assert gallery.symbols(["OOD", "seen in training", "→ x"]) == "⚠T→"


def test_patient_review_counts_per_patient():
    q = gallery.review_queue(scores([("UID_1_1_1_all.png", "myeloblast", 0.9, False),
                                     ("UID_1_2_1_all.png", "myeloblast", 0.8, False),
                                     ("UID_H2_1_1_hem.png", "lymphocyte", 0.1, False)]), CLASSES, POSITIVE)
    d = decisions([("UID_1_1_1_all.png", "override", "lymphocyte")])
    p = gallery.patient_review(q, d, POSITIVE).set_index("patient")
    assert p.loc["1", "cells"] == 2 and p.loc["1", "positive (pre-classified)"] == 2
    assert p.loc["1", "reviewed"] == 1 and p.loc["1", "positive (reviewed)"] == 0
    assert gallery.patient_review(q.assign(file="x.png"), d, POSITIVE).empty


def signoff(store, batch, last, reviewer="Dr S"):
    return store.sign_off(SignOff(batch=batch, reviewer=reviewer, model="m", model_sha256="ab" * 32,
                                  threshold=0.5, cells=6, reviewed=5, differential="[]", last_decision=last))


def test_sign_off_is_appended_and_refused_when_decisions_moved_on(tmp_path):
    store = ReviewStore(tmp_path / "d.sqlite")
    with pytest.raises(ValueError):
        signoff(store, "b1", None, reviewer=" ")
    first = signoff(store, "b1", None)  # nothing decided yet: the differential read no decision
    d = store.record(Decision(batch="b1", file="a.png", action="confirm", reviewer="Dr S"), shown=None)
    with pytest.raises(StaleSignOffError):
        signoff(store, "b1", None)  # read before that decision
    second = signoff(store, "b1", d)
    rows = store.sign_offs("b1")
    assert rows["id"].tolist() == [first, second] and rows["last_decision"].iloc[1] == d
    assert store.sign_offs("other").empty


def test_report_is_a_draft_until_signed_and_escapes_names(tmp_path, queue):
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 100, 200)).save(tmp_path / "c.png")
    q = queue.copy()
    q.loc[q["file"] == "b.png", "file"] = "<script>.png"
    table, s = gallery.review_differential(q, None, CLASSES, POSITIVE)
    from leukoview.models.card import Card

    card = Card(id="m", task="wbc9", architecture="efficientnet_lite0", kind="network", classes=tuple(CLASSES),
                positive=tuple(POSITIVE), input={"size": 160}, threshold=0.25, files={"model.safetensors": "f" * 64},
                dataset={"name": "wbc9"})
    metrics = {"accuracy": 0.9, "accuracy_ci95": [0.85, 0.95],
               "external": {"bccd": {"positive_decision_among_normal": {"rate": 0.37, "count": 130, "of": 351}}}}
    kw = dict(folder=str(tmp_path), queue=q, decisions=None, table=table, summary=s, card=card, metrics=metrics,
              positive=POSITIVE, positive_name="Myeloblast")
    draft = report.render(sign_off=None, **kw)
    assert "DRAFT" in draft and "<script>.png" not in draft and "&lt;script&gt;.png" in draft
    assert "data:image/jpeg;base64," in draft  # c.png's thumbnail inline; the others are unreadable
    assert "0.900 [0.850-0.950]" in draft and "37.0% (130 of 351)" in draft and "f" * 64 in draft
    assert "not a medical device" in draft
    seen_q = q.assign(in_training=["train", "", "val", "", "", ""])
    decisions = pd.DataFrame([{"id": 1, "file": "c.png", "action": "confirm", "label": "myeloblast", "comment": "",
                               "reviewer": "R", "created_at": "t"}])
    t2, s2 = gallery.review_differential(seen_q, decisions, CLASSES, POSITIVE)
    partial = report.render(sign_off=None, **{**kw, "queue": seen_q, "table": t2, "summary": s2,
                                              "decisions": decisions})
    assert "2 of 6 (the model" in partial  # two cells were in its training data
    assert "100.0% of 1 reviewed classed cell (of 6 cells in the folder; 5 not reviewed)" in partial
    signed = report.render(sign_off={"reviewer": "Dr <S>", "created_at": "2026-12-02T10:00:00+00:00",
                                     "comment": ""}, **kw)
    assert "DRAFT" not in signed and "Signed off by <b>Dr &lt;S&gt;</b>" in signed
    assert report.report_name("/x/wbc5/test/").startswith("leukoview_report_test_")
