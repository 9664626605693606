"""Who signed what: the tamper-evident trail of the review store, the local users file, roles and sign-in."""
from __future__ import annotations

import shutil
import sqlite3

import pytest

from leukoview.app import review, users


def _store(tmp_path):
    s = review.ReviewStore(tmp_path / "d.sqlite")
    last = None
    for i in range(4):
        last = s.record(review.Decision(batch="b", file=f"c{i}.png", action="confirm", label="blast",
                                        reviewer="Ann", model="m"), shown=None)
    s.sign_off(review.SignOff(batch="b", reviewer="Sue", model="m", model_sha256="f" * 64, threshold=0.5, cells=4,
                              reviewed=4, differential="[]", last_decision=last, mode=users.LOCAL))
    amended = s.record(review.Decision(batch="b", file="c0.png", action="override", label="lymphocyte",
                                       reviewer="Ann", model="m"), shown=s.latest("b").set_index("file").at[
        "c0.png", "id"])
    return s, amended


def test_an_untouched_trail_verifies_and_an_amendment_points_to_the_sign_off(tmp_path):
    s, amended = _store(tmp_path)
    r = s.verify()
    assert r["ok"] and r["entries"] == 6 and r["head"] == s.head() and len(r["head"]) == 64
    row = s.history("b", "c0.png").set_index("id").loc[amended]
    assert row["amends"] == s.sign_offs("b")["id"].iloc[0]  # a change after the sign-off, never an edit of it
    assert s.sign_offs("b")["mode"].iloc[0] == users.LOCAL


EDITS = [
    ("UPDATE decisions SET label='myeloblast' WHERE id={i}", "altered"),
    ("UPDATE decisions SET reviewer='Mallory' WHERE id={i}", "altered"),
    ("DELETE FROM decisions WHERE id={i}", "deleted"),
    ("UPDATE signoffs SET reviewed=1", "altered"),
    ("DELETE FROM signoffs", "deleted"),
    ("INSERT INTO decisions (batch, file, action, label, reviewer, created_at) VALUES "
     "('b', 'x.png', 'confirm', 'blast', 'Mallory', '2026-01-01')", "inserted"),
    ("DELETE FROM trail WHERE seq={i}", "out of order|inserted"),
    ("UPDATE trail SET row_hash='{fake}' WHERE seq={i}", "out of order|altered"),
]


@pytest.mark.parametrize("sql, says", EDITS)
def test_every_single_row_edit_behind_the_apps_back_is_found(tmp_path, sql, says):
    import re

    s, _ = _store(tmp_path)
    clean = tmp_path / "clean.sqlite"
    shutil.copy(s.path, clean)
    for i in range(1, 7):  # each row it applies to, one at a time, on a fresh copy
        path = tmp_path / f"t{i}.sqlite"
        shutil.copy(clean, path)
        with sqlite3.connect(path) as con:
            changed = con.execute(sql.format(i=i, fake="a" * 64)).rowcount
        if not changed:
            continue
        r = review.ReviewStore(path).verify()
        assert not r["ok"] and re.search(says, r["problem"]), (sql, i, r)


def test_users_file_holds_salted_hashes_and_roles(tmp_path):
    path = tmp_path / "users.json"
    users.add("Ann Lee", "reviewer", "correct horse battery", path=path)
    users.add("Sue", "supervisor", "staple battery horse", path=path)
    text = path.read_text()
    assert "correct horse" not in text and text.count("$argon2id$") == 2
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    ann = users.sign_in("Ann Lee", "correct horse battery", path=path)
    assert ann.role == "reviewer" and not ann.may_sign_off and users.sign_in("Sue", "staple battery horse",
                                                                             path=path).may_sign_off
    for name, pw in (("Ann Lee", "wrong password!"), ("Nobody", "correct horse battery")):
        with pytest.raises(users.UserError, match="unknown user or wrong password"):
            users.sign_in(name, pw, path=path)
    with pytest.raises(users.UserError, match="at least 10"):
        users.add("Bob", "reviewer", "short", path=path)
    with pytest.raises(users.UserError, match="role"):
        users.add("Bob", "admin", "long enough password", path=path)
    assert users.oidc_identity({"email": "sue"}, path=path).role == "reviewer"
    assert users.oidc_identity({"email": "Sue"}, path=path).role == "supervisor"


def test_the_cli_adds_users_from_stdin_and_verifies_the_trail(tmp_path, monkeypatch, capsys):
    import io

    from leukoview.__main__ import main

    monkeypatch.setenv("LEUKOVIEW_REVIEW_DIR", str(tmp_path))
    monkeypatch.setattr("sys.stdin", io.StringIO("a long secret phrase\n"))
    assert main(["users", "add", "Sue", "--role", "supervisor", "--password-stdin"]) == 0
    assert "a long secret" not in capsys.readouterr().out + (tmp_path / "users.json").read_text()
    s, _ = _store(tmp_path)
    assert main(["audit-trail", "verify", "--store", str(s.path)]) == 0
    with sqlite3.connect(s.path) as con:
        con.execute("UPDATE decisions SET label='x' WHERE id=2")
    assert main(["audit-trail", "verify", "--store", str(s.path)]) == 1
    assert "decision id 2" in capsys.readouterr().err
