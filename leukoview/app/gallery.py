"""The cell-review workflow of the batch page, without Streamlit: the review queue (cells grouped by predicted class,
most suspicious first, out-of-distribution cells apart as *unidentified*), pages of thumbnails, badges, the
keyboard map, what each key records, and the differential as pre-classified and as reviewed, side by side.

Percentages follow clinical cell-review software: unidentified cells (the model's OOD flag before review, the
reviewer's "unidentified" after), cells sent to second review and cells not yet reviewed are counted but left
out of the percentages."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from leukoview.app.batch import BLAST_REFERENCE
from leukoview.models.differential import flagged
from leukoview.primitives.vocab import CANNOT_ASSESS, FLAGGED_UNIDENTIFIED, REVIEWED_UNIDENTIFIED

# Thumbnails per gallery page. Every review key redraws the page (its badges and the open cell's highlight), so the
# server and the browser pay for a page's size at every key: four rows of six.
PER_PAGE = 24
PENDING = "second review pending"
NOT_REVIEWED = "not yet reviewed"


def review_queue(scores: pd.DataFrame, classes: list[str], positive: list[str]) -> pd.DataFrame:
    """Scored cells (readable, not refused by the input gate) in review order, with a ``group`` column: the
    positive classes first, then the other classes in the model's order, then the unidentified (OOD-flagged)
    cells; within a group the most suspicious first."""
    ok = scores[(scores["error"] == "") & scores["suspicion"].notna()].copy()
    unplaced = flagged(ok)
    ok["group"] = ok["predicted"].where(~unplaced, FLAGGED_UNIDENTIFIED)
    order = [*positive, *(c for c in classes if c not in positive), FLAGGED_UNIDENTIFIED]
    ok["_g"] = ok["group"].map({g: i for i, g in enumerate(order)})
    ok = ok.sort_values(["_g", "suspicion", "file"], ascending=[True, False, True], kind="stable")
    return ok.drop(columns="_g").reset_index(drop=True)


def page_count(n: int, per_page: int = PER_PAGE) -> int:
    return max(1, -(-n // per_page))


def gallery_page(queue: pd.DataFrame, page: int, per_page: int = PER_PAGE) -> pd.DataFrame:
    """Rows of page ``page`` (1-based, clamped to the pages there are), keeping their queue position ``pos``."""
    page = min(max(1, int(page)), page_count(len(queue), per_page))
    part = queue.iloc[(page - 1) * per_page: page * per_page].copy()
    part.insert(0, "pos", range((page - 1) * per_page, (page - 1) * per_page + len(part)))
    return part


def page_of(pos: int, per_page: int = PER_PAGE) -> int:
    """The gallery page (1-based) that shows queue position ``pos``."""
    return int(pos) // per_page + 1


def current_decisions(decisions: pd.DataFrame | None) -> dict[str, dict]:
    """file -> its latest decision (as a dict), from :meth:`leukoview.app.review.ReviewStore.latest`."""
    if decisions is None or decisions.empty:
        return {}
    return {r["file"]: r for r in decisions.to_dict("records")}


def reviewed_class(row, decision: dict | None) -> str:
    """The class a cell has after review: the corrected label of an override (possibly "unidentified"), the
    model's class when confirmed, :data:`PENDING` when sent to second review, :data:`NOT_REVIEWED` otherwise."""
    if not decision:
        return NOT_REVIEWED
    if decision["action"] == "override":
        return decision["label"]
    if decision["action"] == "confirm":
        return decision["label"] or row["predicted"]
    return PENDING


def badges(row, decision: dict | None) -> list[str]:
    """Short labels under a thumbnail: OOD, seen in training, no cell found, reviewed (and to what)."""
    out = []
    if row.get("ood_flag") is True or row.get("decision") == CANNOT_ASSESS:
        out.append("OOD")
    if row.get("in_training") in ("train", "val"):
        out.append("seen in training")
    if row.get("cell_found") is False or (row.get("cells") == 0):
        out.append("no cell found")
    got = reviewed_class(row, decision)
    if got == PENDING:
        out.append("2nd review")
    elif got != NOT_REVIEWED:
        out.append("✓" if got == row["predicted"] else f"→ {got}")
    return out


SYMBOLS = {"OOD": "⚠", "seen in training": "T", "no cell found": "∅", "2nd review": "2nd", "✓": "✓"}
SYMBOL_LEGEND = ("Under each cell: its score, then ⚠ out of distribution, T seen in training, ∅ no cell found, "
                 "✓ confirmed, → reclassified, 2nd sent to second review.")


def symbols(tags: list[str]) -> str:
    """:func:`badges` as one-character symbols (:data:`SYMBOL_LEGEND`), for a thumbnail's button."""
    return "".join(SYMBOLS.get(t, "→" if t.startswith("→") else "") for t in tags)


# --------------------------------------------------------------------------------------------- keyboard


@dataclass(frozen=True)
class Key:
    id: str
    key: str
    help: str


def key_map(classes: list[str]) -> list[Key]:
    """The review shortcuts: arrows (or j / k) move, Enter or c confirms, 1-9 reclassify to the n-th type, u marks
    unidentified, s sends to second review. Moves are not recorded; every other key saves a decision at once and
    opens the next cell."""
    keys = [Key("next", "ArrowRight", "next cell"), Key("next", "j", "next cell"),
            Key("previous", "ArrowLeft", "previous cell"), Key("previous", "k", "previous cell"),
            Key("confirm", "Enter", "confirm the model's class"), Key("confirm", "c", "confirm the model's class"),
            Key("unidentified", "u", "unidentified (no type fits)"), Key("second_review", "s", "second review")]
    keys += [Key(f"class:{i}", str(i + 1), f"reclassify as {c}") for i, c in enumerate(classes[:9])]
    return keys


def decision_label(action: str, row, label: str = "") -> str:
    """The label a decision stores: a confirmation, the model's class; an override, the reviewer's; a second
    review, none."""
    return {"confirm": row["predicted"], "override": label, "second_review": ""}[action]


def action_for(key_id: str, row, classes: list[str]) -> tuple[str, str] | None:
    """The (action, label) a key records for the cell ``row``; None for a move. Reclassifying to the model's own
    class is a confirmation."""
    if key_id in ("next", "previous"):
        return None
    if key_id == "confirm":
        return "confirm", row["predicted"]
    if key_id == "unidentified":
        return "override", REVIEWED_UNIDENTIFIED
    if key_id == "second_review":
        return "second_review", ""
    if key_id.startswith("class:"):
        label = classes[int(key_id.split(":", 1)[1])]
        return ("confirm", label) if label == row["predicted"] else ("override", label)
    raise ValueError(f"unknown review key {key_id!r}")


def step(pos: int, n: int, key_id: str | None) -> int:
    """The queue position after a key: a move goes one way, a recorded decision goes to the next cell; the ends
    hold."""
    if n <= 0:
        return 0
    delta = -1 if key_id == "previous" else 1
    return min(max(0, pos + delta), n - 1)


# --------------------------------------------------------------------------------------------- differential


def review_differential(queue: pd.DataFrame, decisions: pd.DataFrame | None, classes: list[str],
                        positive: list[str]) -> tuple[pd.DataFrame, dict]:
    """Per type: count and % as pre-classified (the model; OOD-flagged cells unidentified) and as reviewed, side
    by side. Percentages are over the classed cells of each column; the unidentified, second-review and
    not-yet-reviewed rows are counted only. ``queue``: :func:`review_queue`'s table."""
    current = current_decisions(decisions)
    pre = queue["group"].tolist()
    post = [reviewed_class(r, current.get(r["file"])) for r in queue.to_dict("records")]
    post = [FLAGGED_UNIDENTIFIED if c == REVIEWED_UNIDENTIFIED else c for c in post]
    other = [c for c in dict.fromkeys(post) if c not in (*classes, FLAGGED_UNIDENTIFIED, PENDING, NOT_REVIEWED)]
    types = [*classes, *other]
    n_pre = sum(c in types for c in pre)
    n_post = sum(c in types for c in post)
    rows = []
    for t in [*types, FLAGGED_UNIDENTIFIED, PENDING, NOT_REVIEWED]:
        a, b = pre.count(t), post.count(t)
        counted = t in types
        rows.append({"type": t, "pre-classified": a,
                     "pre %": 100 * a / n_pre if counted and n_pre else float("nan"),
                     "reviewed": b, "reviewed %": 100 * b / n_post if counted and n_post else float("nan"),
                     "positive": t in positive})
    table = pd.DataFrame(rows)
    pos_pre = sum(pre.count(c) for c in positive)
    pos_post = sum(post.count(c) for c in positive)
    summary = {"cells": len(queue), "reviewed": len(queue) - post.count(NOT_REVIEWED),
               "pending": post.count(PENDING), "classed_pre": n_pre, "classed_reviewed": n_post,
               "positive_types": list(positive),
               "positive_percent_pre": 100 * pos_pre / n_pre if n_pre else float("nan"),
               "positive_percent_reviewed": 100 * pos_post / n_post if n_post else float("nan"),
               "reference_percent": 100 * BLAST_REFERENCE}
    return table, summary


def compact(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`review_differential`'s table as three columns of "count (%)" text, for a narrow panel."""
    def cell(n, pct):
        return f"{n} ({pct:.1f}%)" if pct == pct else str(n)  # NaN: counted, not in the percentages

    return pd.DataFrame({"type": table["type"],
                         "pre-classified": [cell(n, p) for n, p in zip(table["pre-classified"], table["pre %"],
                                                                       strict=True)],
                         "reviewed": [cell(n, p) for n, p in zip(table["reviewed"], table["reviewed %"],
                                                                 strict=True)]})


def differential_json(table: pd.DataFrame) -> str:
    """The differential as stored with a sign-off (NaN percentages as null)."""
    rows = table.drop(columns=["positive"]).astype(object).where(table.drop(columns=["positive"]).notna(), None)
    return json.dumps(rows.to_dict("records"))


def patient_review(queue: pd.DataFrame, decisions: pd.DataFrame | None, positive: list[str]) -> pd.DataFrame:
    """Per patient (a C-NMC style file name or a folder per patient): cells, positive cells as pre-classified and as
    reviewed (over the reviewed classed cells). Empty when no path carries a patient id."""
    from leukoview.models.differential import patient_of

    current = current_decisions(decisions)
    rows = []
    for r in queue.to_dict("records"):
        patient = patient_of(r["file"])
        if patient:
            got = reviewed_class(r, current.get(r["file"]))
            rows.append({"patient": patient, "pre": r["group"] in positive,
                         "classed": got not in (NOT_REVIEWED, PENDING, REVIEWED_UNIDENTIFIED),
                         "post": got in positive})
    if not rows:
        return pd.DataFrame(columns=["patient", "cells", "positive (pre-classified)", "reviewed",
                                     "positive (reviewed)"])
    df = pd.DataFrame(rows)
    g = df.groupby("patient").agg(cells=("pre", "size"), pre=("pre", "sum"), reviewed=("classed", "sum"),
                                  post=("post", "sum"))
    return g.reset_index().rename(columns={"pre": "positive (pre-classified)", "post": "positive (reviewed)"})
