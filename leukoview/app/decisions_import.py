"""Importing a decisions CSV — the batch page's own export ("Download scores and decisions"), made on another
server or from an offline copy of the same folder — into the review store.

Attribution stays true: each imported decision is recorded under the signed-in user who imports it, and its comment
says which file it came from and whom that file names as the decider (a file's claim, not a signed-in identity).
Nothing is overwritten: a cell that already has a decision here is skipped and named. A file exported from another
model's scores is refused whole. Bad bytes get a :class:`DecisionsCSVError` with a clear message."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from leukoview.app import review
from leukoview.primitives.vocab import REVIEWED_UNIDENTIFIED

MAX_BYTES = 20 * 2**20
MAX_ROWS = 200_000
REQUIRED = ("file", "review_action")


class DecisionsCSVError(ValueError):
    """A decisions file that cannot be imported at all; the message says why."""


@dataclass
class ImportPlan:
    decisions: list[review.Decision] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "line N: file: why", one per row not imported


def _rows(raw: bytes) -> list[dict]:
    if len(raw) > MAX_BYTES:
        raise DecisionsCSVError(f"the file is {len(raw) / 2**20:.1f} MB; a decisions export is at most "
                                f"{MAX_BYTES // 2**20} MB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DecisionsCSVError("not UTF-8 text: import the CSV file the batch page exported") from None
    if "\0" in text:
        raise DecisionsCSVError("not a text file: import the CSV file the batch page exported")
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise DecisionsCSVError(f"no column {', '.join(missing)}: import the CSV file the batch page exported "
                                    "(Download scores and decisions)")
        rows = []
        for r in reader:
            rows.append(r)
            if len(rows) > MAX_ROWS:
                raise DecisionsCSVError(f"more than {MAX_ROWS} rows")
    except csv.Error as e:
        raise DecisionsCSVError(f"not a readable CSV file ({e})") from None
    return rows


def plan(raw: bytes, sb, *, reviewer: str, source: str, decided: set[str]) -> ImportPlan:
    """The decisions that ``raw`` (a decisions CSV) would add to the scored batch ``sb``, recorded under
    ``reviewer``; ``decided``: the files that already have a decision in the store (skipped, never overwritten)."""
    rows = _rows(raw)
    models = {(r.get("model") or "").strip() for r in rows} - {""}
    if models and models != {sb.model}:
        raise DecisionsCSVError(f"these decisions were made on the scores of {', '.join(sorted(models))}; this "
                                f"folder was scored with {sb.model}. Score it with that model, then import.")
    cells = {r["file"]: r for r in sb.cells().to_dict("records")}
    labels = {*sb.classes, REVIEWED_UNIDENTIFIED}
    out, seen = ImportPlan(), set()
    for line, r in enumerate(rows, start=2):
        action, file = (r.get("review_action") or "").strip(), r.get("file") or ""
        if not action:
            continue  # a cell the file left undecided
        why = ("not a scored cell of this folder" if file not in cells else
               "twice in the file" if file in seen else
               f"unknown action {action[:40]!r}" if action not in review.ACTIONS else
               "already decided here (not overwritten)" if file in decided else
               f"unknown label {(r.get('review_label') or '')[:40]!r}" if action == "override" and
               (r.get("review_label") or "") not in labels else "")
        seen.add(file)
        if why:
            out.skipped.append(f"line {line}: {file[:200]}: {why}")
            continue
        by = (r.get("reviewed_by") or "").strip()[:200]
        at = (r.get("reviewed_at") or "").strip()[:40]
        note = "; ".join(x for x in (f"imported from {source[:200]}",
                                     f"the file names {by} as the decider" + (f" at {at}" if at else "") if by else "",
                                     (r.get("review_comment") or "").strip()) if x)
        out.decisions.append(sb.decide(cells[file], action, r.get("review_label") or "", reviewer=reviewer,
                                       comment=note[:2000]))
    return out


def apply(store: review.ReviewStore, p: ImportPlan) -> tuple[int, list[str]]:
    """Records the plan's decisions, each only if its cell is still undecided; returns (recorded, skipped)."""
    done, skipped = 0, list(p.skipped)
    for d in p.decisions:
        try:
            store.record(d, shown=None)  # a decision made here since the plan: a conflict, not an overwrite
            done += 1
        except review.ConflictError:
            skipped.append(f"{d.file}: decided here meanwhile (not overwritten)")
    return done, skipped
