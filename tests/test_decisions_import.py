"""Reading a decisions CSV for import: bad bytes are refused whole with a clear message; each row that cannot be
imported is named with its reason; nothing is imported over a decision already in the store."""
from __future__ import annotations

import pandas as pd
import pytest

from fuzz.targets import ImportBatch as Batch  # the part of a ScoredBatch an import reads (4 cells)
from leukoview.app import decisions_import as di
from leukoview.app import review


def csv_of(rows: list[dict]) -> bytes:
    return pd.DataFrame(rows).to_csv(index=False).encode()


@pytest.mark.parametrize("raw, message", [
    (b"\xff\xfe\x00b\x00a", "not UTF-8"),
    (b"file,review_action\x00\n", "not a text file"),
    (b"name,decision\na.png,confirm\n", "no column file, review_action"),
    (b"", "no column"),
    (b"file,review_action\n" + b"a.png,confirm\n" * (di.MAX_ROWS + 1), "more than"),
    (b"x" * (di.MAX_BYTES + 1), "MB"),
])
def test_bad_files_are_refused_whole_with_a_reason(raw, message):
    with pytest.raises(di.DecisionsCSVError, match=message):
        di.plan(raw, Batch(), reviewer="R", source="f.csv", decided=set())


def test_each_row_that_cannot_be_imported_is_named_with_its_reason():
    raw = csv_of([
        {"file": "a.png", "review_action": "confirm", "review_label": "blast", "reviewed_by": "Dr X",
         "reviewed_at": "2026-12-01T10:00:00", "review_comment": "clear blast"},
        {"file": "b.png", "review_action": "override", "review_label": "unicorn"},
        {"file": "c.png", "review_action": "burn", "review_label": ""},
        {"file": "zzz.png", "review_action": "confirm", "review_label": ""},
        {"file": "a.png", "review_action": "second_review", "review_label": ""},
        {"file": "b.png", "review_action": "", "review_label": ""},  # undecided in the file: not a row to import
    ])
    p = di.plan(raw, Batch(), reviewer="Dr Y", source="f.csv", decided=set())
    assert [(d.file, d.action, d.label, d.reviewer) for d in p.decisions] == [("a.png", "confirm", "blast", "Dr Y")]
    assert p.decisions[0].comment == "imported from f.csv; the file names Dr X as the decider at " \
                                     "2026-12-01T10:00:00; clear blast"
    assert p.skipped == ["line 3: b.png: unknown label 'unicorn'", "line 4: c.png: unknown action 'burn'",
                         "line 5: zzz.png: not a scored cell of this folder", "line 6: a.png: twice in the file"]


def test_a_cell_decided_here_is_skipped_at_planning_and_at_recording(tmp_path):
    raw = csv_of([{"file": f, "review_action": "confirm", "review_label": ""} for f in ("a.png", "b.png", "c.png")])
    p = di.plan(raw, Batch(), reviewer="R", source="f.csv", decided={"a.png"})
    assert [d.file for d in p.decisions] == ["b.png", "c.png"] and "already decided here" in p.skipped[0]
    store = review.ReviewStore(tmp_path / "d.sqlite")
    store.record(Batch().decide(Batch().cells().iloc[1], "override", "blast", reviewer="Other"), shown=None)
    done, skipped = di.apply(store, p)  # b.png was decided after the plan was made
    assert done == 1 and skipped[-1] == "b.png: decided here meanwhile (not overwritten)"
    latest = store.latest(Batch.batch).set_index("file")
    assert latest.loc["b.png", "reviewer"] == "Other" and latest.loc["c.png", "reviewer"] == "R"
    assert store.verify()["ok"]


def test_a_file_from_another_models_scores_is_refused():
    raw = csv_of([{"file": "a.png", "review_action": "confirm", "model": "m2"}])
    with pytest.raises(di.DecisionsCSVError, match="scored with m1"):
        di.plan(raw, Batch(), reviewer="R", source="f.csv", decided=set())
