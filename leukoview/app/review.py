"""Reviewer decisions: an append-only SQLite log (who, when, what), so nothing entered is ever lost.

Every save is one committed transaction (WAL journal, full sync), so a killed server loses nothing already
confirmed on screen. A decision records which earlier decision the reviewer saw; if someone else decided on the
same file in the meantime, :class:`ConflictError` is raised instead of silently replacing their work. A decision
made after a slide was signed off is an amendment: it points to that sign-off (``amends``), never edits it.

Tamper-evident trail: every decision and sign-off row gets, in the same transaction, an entry in ``trail`` whose
hash chains the row's content to the previous entry's hash. :meth:`ReviewStore.verify` recomputes the chain and
names the first row that was altered, deleted or inserted behind the app's back; the sign-off report prints the
chain head (:meth:`ReviewStore.head`), so a rewritten chain differs from every report printed before it.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from leukoview.primitives import settings

ACTIONS = ("confirm", "override", "second_review")
ACTION_LABELS = {"confirm": "confirm the model", "override": "override the label",
                 "second_review": "mark for second review"}
SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch TEXT NOT NULL,
    file TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('confirm', 'override', 'second_review')),
    label TEXT NOT NULL DEFAULT '',
    comment TEXT NOT NULL DEFAULT '',
    reviewer TEXT NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    suspicion REAL,
    created_at TEXT NOT NULL,
    supersedes INTEGER
);
CREATE INDEX IF NOT EXISTS decisions_batch_file ON decisions (batch, file, id);
CREATE TABLE IF NOT EXISTS signoffs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch TEXT NOT NULL,
    folder TEXT NOT NULL DEFAULT '',
    reviewer TEXT NOT NULL,
    model TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    threshold REAL,
    cells INTEGER NOT NULL,
    reviewed INTEGER NOT NULL,
    differential TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT '',
    last_decision INTEGER,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS signoffs_batch ON signoffs (batch, id);
CREATE TABLE IF NOT EXISTS trail (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('decision', 'signoff')),
    row_id INTEGER NOT NULL,
    prev_hash TEXT NOT NULL,
    row_hash TEXT NOT NULL
);
"""
ADDED_COLUMNS = {"decisions": {"amends": "INTEGER"}, "signoffs": {"mode": "TEXT NOT NULL DEFAULT ''"}}
GENESIS = "0" * 64
TABLE = {"decision": "decisions", "signoff": "signoffs"}


def row_hash(prev_hash: str, kind: str, row: dict) -> str:
    """The chain hash of one row: sha256 over the previous entry's hash, the row's kind and its content (every
    column, canonical JSON)."""
    body = json.dumps({k: row[k] for k in sorted(row)}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{prev_hash}|{kind}|{body}".encode()).hexdigest()


class ReviewStoreError(RuntimeError):
    """The decision store cannot be read or written (corrupt, locked, no permission)."""


class ConflictError(ReviewStoreError):
    """Another session recorded a newer decision for this file than the one the reviewer saw."""

    def __init__(self, current: dict):
        self.current = current
        super().__init__(f"{current['reviewer']} recorded '{current['action']}' for {current['file']} at "
                         f"{current['created_at']} after you opened it; reload to see it before deciding again")


class StaleSignOffError(ReviewStoreError):
    """A decision was recorded after the differential being signed off was read."""


@dataclass(frozen=True)
class SignOff:
    """A reviewer's sign-off of a folder: the final differential (JSON rows: type, pre-classified and reviewed
    counts and %), the model id, the sha256 of its weights and its threshold. ``last_decision`` is the id of the
    newest decision the differential counted (None: none)."""

    batch: str
    reviewer: str
    model: str
    model_sha256: str
    threshold: float | None
    cells: int
    reviewed: int
    differential: str
    folder: str = ""
    comment: str = ""
    last_decision: int | None = None
    mode: str = ""  # how the signer was identified: "signed in (local users)", "signed in (OIDC)" or "demo"


@dataclass(frozen=True)
class Decision:
    batch: str
    file: str
    action: str
    reviewer: str
    label: str = ""
    comment: str = ""
    model: str = ""
    suspicion: float | None = None


class ReviewStore:
    """Decisions in ``<review dir>/decisions.sqlite`` (or ``path``)."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else settings.review_dir() / "decisions.sqlite"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as con, con:
                con.executescript(SCHEMA)
                for table, cols in ADDED_COLUMNS.items():  # stores written before these columns existed
                    have = {r["name"] for r in con.execute(f"PRAGMA table_info({table})")}
                    for name, decl in cols.items():
                        if name not in have:
                            con.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
            self._chain_existing()
        except (sqlite3.DatabaseError, OSError) as e:
            raise ReviewStoreError(f"the review store {self.path} cannot be opened ({e}); decisions cannot be "
                                   "saved until this is fixed (check the file and LEUKOVIEW_REVIEW_DIR)") from None

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=5, isolation_level=None)  # explicit transactions below
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        return con

    def _latest_row(self, con, batch: str, file: str) -> dict | None:
        row = con.execute("SELECT * FROM decisions WHERE batch=? AND file=? ORDER BY id DESC LIMIT 1",
                          (batch, file)).fetchone()
        return dict(row) if row else None

    def record(self, d: Decision, *, shown: int | None) -> int:
        """Append a decision; ``shown`` is the id of the latest decision the reviewer was shown (None: none).

        Raises :class:`ConflictError` if the file's latest decision is no longer ``shown``.
        """
        if d.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {d.action!r}")
        if not d.reviewer.strip():
            raise ValueError("a reviewer name is required so that decisions can be attributed")
        if d.action == "override" and not d.label:
            raise ValueError("an override needs the corrected label")
        def append(con) -> int:
            current = self._latest_row(con, d.batch, d.file)
            if (current["id"] if current else None) != shown:
                raise ConflictError(current)
            signed = con.execute("SELECT MAX(id) FROM signoffs WHERE batch=?", (d.batch,)).fetchone()[0]
            rowid = con.execute(
                "INSERT INTO decisions (batch, file, action, label, comment, reviewer, model, suspicion, "
                "created_at, supersedes, amends) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (d.batch, d.file, d.action, d.label, d.comment, d.reviewer.strip(), d.model, d.suspicion,
                 datetime.now(UTC).isoformat(timespec="seconds"), shown, signed)).lastrowid
            self._chain(con, "decision", rowid)
            return rowid

        return self._append("decision", append)

    def _append(self, what: str, step) -> int:
        """``step(con)`` — the checks, then one INSERT, returning the new row's id — in one serialised, committed
        transaction (the check and the insert are one step); rolled back if anything fails. A store error other
        than the step's own (conflict, stale) says the ``what`` was NOT saved."""
        try:
            with closing(self._connect()) as con:
                con.execute("BEGIN IMMEDIATE")  # serialise writers
                try:
                    rowid = int(step(con))
                    con.execute("COMMIT")
                    return rowid
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
        except ReviewStoreError:
            raise
        except sqlite3.DatabaseError as e:
            raise ReviewStoreError(f"could not save the {what} to {self.path} ({e}); it was NOT saved") from None

    def sign_off(self, s: SignOff) -> int:
        """Append a sign-off, in one committed transaction. Refused (:class:`StaleSignOffError`) when a decision
        newer than ``s.last_decision`` exists for the batch: the reviewer would sign a differential that is no
        longer the store's."""
        if not s.reviewer.strip():
            raise ValueError("a reviewer name is required to sign off")

        def append(con) -> int:
            newest = con.execute("SELECT MAX(id) FROM decisions WHERE batch=?", (s.batch,)).fetchone()[0]
            if newest != s.last_decision:
                raise StaleSignOffError("a decision was recorded after this differential was read; reload and "
                                        "check the differential before signing off")
            rowid = con.execute(
                "INSERT INTO signoffs (batch, folder, reviewer, model, model_sha256, threshold, cells, reviewed, "
                "differential, comment, last_decision, created_at, mode) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (s.batch, s.folder, s.reviewer.strip(), s.model, s.model_sha256, s.threshold, s.cells, s.reviewed,
                 s.differential, s.comment, s.last_decision, datetime.now(UTC).isoformat(timespec="seconds"),
                 s.mode)).lastrowid
            self._chain(con, "signoff", rowid)
            return rowid

        return self._append("sign-off", append)

    def sign_offs(self, batch: str) -> pd.DataFrame:
        """Every sign-off of a batch, oldest first."""
        return pd.DataFrame(self._rows("SELECT * FROM signoffs WHERE batch=? ORDER BY id", (batch,)),
                            columns=["id", "batch", "folder", "reviewer", "model", "model_sha256", "threshold",
                                     "cells", "reviewed", "differential", "comment", "last_decision", "created_at",
                                     "mode"])

    # ----------------------------------------------------------------------------------------- the trail

    @staticmethod
    def _chain(con, kind: str, rowid: int) -> str:
        """Append the trail entry of a row just inserted (inside the caller's transaction)."""
        last = con.execute("SELECT row_hash FROM trail ORDER BY seq DESC LIMIT 1").fetchone()
        prev = last["row_hash"] if last else GENESIS
        row = dict(con.execute(f"SELECT * FROM {TABLE[kind]} WHERE id=?", (rowid,)).fetchone())
        digest = row_hash(prev, kind, row)
        con.execute("INSERT INTO trail (kind, row_id, prev_hash, row_hash) VALUES (?,?,?,?)",
                    (kind, rowid, prev, digest))
        return digest

    def _chain_existing(self) -> None:
        """A store written before the trail existed: chain its rows once, in the order they were saved."""
        with closing(self._connect()) as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                if con.execute("SELECT COUNT(*) FROM trail").fetchone()[0] == 0:
                    rows = [("decision", r["id"], r["created_at"]) for r in con.execute(
                        "SELECT id, created_at FROM decisions")]
                    rows += [("signoff", r["id"], r["created_at"]) for r in con.execute(
                        "SELECT id, created_at FROM signoffs")]
                    for kind, rowid, _ in sorted(rows, key=lambda r: (r[2], r[0] == "signoff", r[1])):
                        self._chain(con, kind, rowid)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def head(self) -> str:
        """The hash of the newest trail entry (the chain head); the genesis value for an empty store."""
        rows = self._rows("SELECT row_hash FROM trail ORDER BY seq DESC LIMIT 1", ())
        return rows[0]["row_hash"] if rows else GENESIS

    def verify(self) -> dict:
        """Recompute the trail. Returns ``ok``, ``entries``, ``head`` and ``problem``: the first row (in the order
        saved) that was altered, deleted or inserted out of order, or a row that has no trail entry (inserted
        behind the app's back)."""
        with closing(self._connect()) as con:
            trail = [dict(r) for r in con.execute("SELECT * FROM trail ORDER BY seq")]
            rows = {kind: {r["id"]: dict(r) for r in con.execute(f"SELECT * FROM {table}")}
                    for kind, table in TABLE.items()}
        prev, problem = GENESIS, ""
        for t in trail:
            where = f"trail entry {t['seq']} ({t['kind']} id {t['row_id']})"
            if t["prev_hash"] != prev:
                problem = f"{where}: out of order — it does not follow the entry before it (inserted or removed)"
                break
            row = rows[t["kind"]].get(t["row_id"])
            if row is None:
                problem = f"{where}: the {t['kind']} row was deleted"
                break
            if row_hash(prev, t["kind"], row) != t["row_hash"]:
                problem = f"{where}: the {t['kind']} row was altered after it was saved"
                break
            prev = t["row_hash"]
        if not problem:
            chained = {(t["kind"], t["row_id"]) for t in trail}
            extra = sorted((k, i) for k, table in rows.items() for i in table if (k, i) not in chained)
            if extra:
                problem = (f"{extra[0][0]} id {extra[0][1]}: a row with no trail entry (inserted behind the app's "
                           f"back){f'; {len(extra) - 1} more' if len(extra) > 1 else ''}")
        return {"ok": not problem, "entries": len(trail), "head": prev if not problem else "", "problem": problem}

    def signed_batches(self) -> list[tuple[str, str]]:
        """(batch, folder) of every batch with at least one sign-off (the folder of its latest sign-off)."""
        q = ("SELECT s.batch, s.folder FROM signoffs s JOIN (SELECT batch, MAX(id) AS id FROM signoffs GROUP BY "
             "batch) m ON s.id = m.id ORDER BY s.batch")
        return [(r["batch"], r["folder"]) for r in self._rows(q, ())]

    def latest(self, batch: str) -> pd.DataFrame:
        """The current decision per file of a batch (one row per reviewed file)."""
        q = ("SELECT d.* FROM decisions d JOIN (SELECT file, MAX(id) AS id FROM decisions WHERE batch=? "
             "GROUP BY file) m ON d.id = m.id ORDER BY d.file")
        return self._read(q, (batch,))

    def history(self, batch: str, file: str | None = None) -> pd.DataFrame:
        if file is None:
            return self._read("SELECT * FROM decisions WHERE batch=? ORDER BY id", (batch,))
        return self._read("SELECT * FROM decisions WHERE batch=? AND file=? ORDER BY id", (batch, file))

    def _rows(self, query: str, params: tuple) -> list[dict]:
        try:
            with closing(self._connect()) as con:
                return [dict(r) for r in con.execute(query, params).fetchall()]
        except sqlite3.DatabaseError as e:
            raise ReviewStoreError(f"could not read {self.path} ({e})") from None

    def _read(self, query: str, params: tuple) -> pd.DataFrame:
        columns = ["id", "batch", "file", "action", "label", "comment", "reviewer", "model", "suspicion",
                   "created_at", "supersedes", "amends"]
        return pd.DataFrame(self._rows(query, params), columns=columns)


def export_table(scores: pd.DataFrame, decisions: pd.DataFrame, *, model: str = "", threshold: float | None = None,
                 folder: str = "") -> pd.DataFrame:
    """Scores joined with the current decision of each file (files without a decision keep empty columns), with
    the model, its threshold and the folder on every row so an exported file says where it came from."""
    keep = decisions[["file", "action", "label", "comment", "reviewer", "created_at"]].rename(
        columns={"action": "review_action", "label": "review_label", "comment": "review_comment",
                 "reviewer": "reviewed_by", "created_at": "reviewed_at"})
    out = scores.merge(keep, on="file", how="left").fillna({c: "" for c in keep.columns if c != "file"})
    out.insert(0, "folder", folder)
    out.insert(1, "model", model)
    out.insert(2, "threshold", threshold if threshold is not None else float("nan"))
    return out


def export_name(folder: str, when: datetime | None = None) -> str:
    """``leukoview_<folder name>_<YYYY-MM-DD>.csv``: an export named after what was reviewed and when."""
    import re

    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(folder).rstrip("/")).name or "batch").strip("_") or "batch"
    return f"leukoview_{stem}_{(when or datetime.now(UTC)):%Y-%m-%d}.csv"
