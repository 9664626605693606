import sqlite3
import threading

import pandas as pd
import pytest

from leukoview.app.review import ConflictError, Decision, ReviewStore, ReviewStoreError, export_table


def d(file="a.png", action="confirm", reviewer="ann", **kw):
    return Decision(batch="b1", file=file, action=action, reviewer=reviewer, **kw)


def test_decisions_persist_across_store_instances(tmp_path):
    s1 = ReviewStore(tmp_path / "r.sqlite")
    first = s1.record(d(label="blast", comment="clear blast"), shown=None)
    s2 = ReviewStore(tmp_path / "r.sqlite")  # a restarted server
    latest = s2.latest("b1")
    assert latest.loc[0, "id"] == first and latest.loc[0, "comment"] == "clear blast"
    assert latest.loc[0, "reviewer"] == "ann" and latest.loc[0, "created_at"]


def test_history_is_kept_when_a_decision_is_replaced(tmp_path):
    s = ReviewStore(tmp_path / "r.sqlite")
    a = s.record(d(), shown=None)
    b = s.record(d(action="override", label="normal", reviewer="bob"), shown=a)
    assert s.latest("b1")["id"].tolist() == [b]
    hist = s.history("b1", "a.png")
    assert hist["id"].tolist() == [a, b] and hist["supersedes"].tolist()[1] == a


def test_concurrent_sessions_do_not_overwrite_silently(tmp_path):
    s = ReviewStore(tmp_path / "r.sqlite")
    s.record(d(reviewer="ann"), shown=None)  # ann decides first
    with pytest.raises(ConflictError, match="ann recorded 'confirm'"):
        s.record(d(reviewer="bob", action="second_review"), shown=None)  # bob saw no decision
    assert len(s.history("b1")) == 1


def test_parallel_writers_serialise(tmp_path):
    s = ReviewStore(tmp_path / "r.sqlite")
    errors = []

    def write(i):
        try:
            ReviewStore(tmp_path / "r.sqlite").record(d(file=f"f{i}.png"), shown=None)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(s.latest("b1")) == 20


def test_validation_messages(tmp_path):
    s = ReviewStore(tmp_path / "r.sqlite")
    with pytest.raises(ValueError, match="reviewer name"):
        s.record(d(reviewer="  "), shown=None)
    with pytest.raises(ValueError, match="override needs"):
        s.record(d(action="override"), shown=None)
    with pytest.raises(ValueError, match="action must be"):
        s.record(d(action="delete"), shown=None)


def test_corrupt_store_is_a_clear_error(tmp_path):
    path = tmp_path / "r.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ReviewStoreError, match="cannot be opened"):
        ReviewStore(path)


def test_locked_store_is_a_clear_error(tmp_path):
    path = tmp_path / "r.sqlite"
    s = ReviewStore(path)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    try:
        s_fast = ReviewStore.__new__(ReviewStore)
        s_fast.path = path
        with pytest.raises(ReviewStoreError, match="NOT saved"):
            import leukoview.app.review as R

            orig = R.sqlite3.connect
            R.sqlite3.connect = lambda *a, **k: orig(*a, **{**k, "timeout": 0.2})
            try:
                s.record(d(), shown=None)
            finally:
                R.sqlite3.connect = orig
    finally:
        con.execute("ROLLBACK")
        con.close()


def test_export_joins_current_decisions():
    scores = pd.DataFrame({"file": ["a.png", "b.png"], "suspicion": [0.9, 0.1]})
    decisions = pd.DataFrame([{"id": 1, "batch": "b1", "file": "a.png", "action": "confirm", "label": "blast",
                               "comment": "", "reviewer": "ann", "model": "m", "suspicion": 0.9,
                               "created_at": "2026-01-01T00:00:00+00:00", "supersedes": None}])
    out = export_table(scores, decisions)
    assert out["review_action"].tolist() == ["confirm", ""] and out["reviewed_by"].tolist() == ["ann", ""]


def test_export_says_which_model_threshold_and_folder_and_is_named_after_them():
    from datetime import UTC, datetime

    from leukoview.app.review import export_name

    scores = pd.DataFrame({"file": ["a.png"], "suspicion": [0.9]})
    empty = pd.DataFrame(columns=["file", "action", "label", "comment", "reviewer", "created_at"])
    out = export_table(scores, empty, model="wbc9-efficientnet_lite0", threshold=0.25, folder="/data/slide 7")
    assert out.loc[0, ["folder", "model", "threshold"]].tolist() == ["/data/slide 7", "wbc9-efficientnet_lite0", 0.25]
    assert export_name("/data/slide 7/", datetime(2026, 12, 1, tzinfo=UTC)) == "leukoview_slide_7_2026-12-01.csv"
    assert export_name("", datetime(2026, 12, 1, tzinfo=UTC)) == "leukoview_batch_2026-12-01.csv"
