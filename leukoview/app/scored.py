"""A scored batch owns the model that scored it.

The batch page keeps one :class:`ScoredBatch` per scoring: the folder, the scores, and the bundle (id, threshold,
card, weights' sha256) that produced them. Decisions, the sign-off, the report and the export take the model from
the batch, never from whatever model the sidebar shows later: a sign-off must record the model that scored the
slide. No Streamlit here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from leukoview.app import gallery, report, review
from leukoview.models.bundle import Bundle
from leukoview.primitives import settings
from leukoview.primitives.images import find_images


@dataclass
class ScoredBatch:
    batch: str  # the batch id decisions are stored under
    folder: Path
    bundle: Bundle  # the model that scored it
    scores: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def model(self) -> str:
        return self.bundle.id

    @property
    def threshold(self) -> float:
        return self.bundle.threshold

    @property
    def classes(self) -> list[str]:
        return self.bundle.classes

    @property
    def positive(self) -> list[str]:
        return self.bundle.positive

    def scored_with(self, other: Bundle) -> bool:
        """Whether ``other`` is the model (same id and weights) that scored this batch."""
        return other.id == self.model and other.card.weights_sha256 == self.bundle.card.weights_sha256

    def cells(self) -> pd.DataFrame:
        """The scored cells: readable and not refused by the input gate."""
        ok = self.scores[self.scores["error"] == ""]
        return ok[ok["gate"] == ""]

    def decision(self, key_id: str, row: dict, *, reviewer: str, comment: str = "") -> review.Decision | None:
        """The decision a review key (or button) records for the cell ``row``, by this batch's model; None for a
        move."""
        what = gallery.action_for(key_id, row, self.classes)
        if what is None:
            return None
        action, label = what
        return self.decide(row, action, label, reviewer=reviewer, comment=comment)

    def decide(self, row: dict, action: str, label: str = "", *, reviewer: str, comment: str = ""
               ) -> review.Decision:
        """A decision from the table form: ``label`` is read only for an override (the rule of
        :func:`leukoview.app.gallery.decision_label`)."""
        return review.Decision(batch=self.batch, file=row["file"], action=action,
                               label=gallery.decision_label(action, row, label), comment=comment,
                               reviewer=reviewer, model=self.model, suspicion=float(row["suspicion"]))

    def sign_off(self, *, reviewer: str, table: pd.DataFrame, summary: dict, decisions: pd.DataFrame | None,
                 comment: str = "", mode: str = "") -> review.SignOff:
        """The sign-off of this batch's differential, recording the model that scored it."""
        return review.SignOff(
            batch=self.batch, folder=str(self.folder), reviewer=reviewer, model=self.model,
            model_sha256=self.bundle.card.weights_sha256, threshold=float(self.threshold), cells=summary["cells"],
            reviewed=summary["reviewed"], differential=gallery.differential_json(table), comment=comment,
            last_decision=int(decisions["id"].max()) if decisions is not None and len(decisions) else None, mode=mode)

    def report(self, *, queue: pd.DataFrame, decisions: pd.DataFrame | None, table: pd.DataFrame, summary: dict,
               sign_off: dict | None, positive_name: str, trail_head: str = "") -> str:
        return report.render(folder=str(self.folder), queue=queue, decisions=decisions, table=table,
                             summary=summary, card=self.bundle.card, metrics=self.bundle.metrics, sign_off=sign_off,
                             positive=self.positive, positive_name=positive_name, trail_head=trail_head)

    def export(self, decisions: pd.DataFrame) -> pd.DataFrame:
        return review.export_table(self.scores, decisions, model=self.model, threshold=self.threshold,
                                   folder=str(self.folder))


def _fingerprint(folder: Path) -> str:
    """What is in a folder now: every image's path, size and modification time (a changed folder is rescored)."""
    import hashlib

    h = hashlib.sha256()
    for p in find_images(folder):
        st = p.stat()
        h.update(f"{p.relative_to(folder).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _cache_file(batch: str, b: Bundle) -> Path:
    import hashlib

    key = hashlib.sha256(f"{batch}|{b.id}|{b.card.weights_sha256}".encode()).hexdigest()[:24]
    return settings.review_dir() / "scored" / f"{key}.csv"


def save(sb: ScoredBatch) -> None:
    """Keep a scored batch's scores beside the review store, so a reload (or another reviewer) finds them without
    scoring again; the folder's fingerprint says whether they still describe it."""
    import json

    path = _cache_file(sb.batch, sb.bundle)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sb.scores.to_csv(path.with_suffix(".tmp"), index=False)
        path.with_suffix(".tmp").replace(path)
        path.with_suffix(".json").write_text(json.dumps({"batch": sb.batch, "folder": str(sb.folder),
                                                         "model": sb.model, "notes": sb.notes,
                                                         "fingerprint": _fingerprint(sb.folder)}))
    except OSError:
        pass  # only a convenience: the batch can always be scored again


def restore(batch: str, folder: Path, b: Bundle) -> ScoredBatch | None:
    """The scores ``b`` gave this folder before, if the folder has not changed since; else None."""
    import json

    path = _cache_file(batch, b)
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        if meta["batch"] != batch or meta["fingerprint"] != _fingerprint(Path(folder)):
            return None
        scores = pd.read_csv(path, keep_default_na=False)
    except (OSError, ValueError, KeyError):
        return None
    for col in ("suspicion", "ood_score", *b.classes):  # numbers back as numbers ('' for unreadable files)
        if col in scores:
            scores[col] = pd.to_numeric(scores[col], errors="coerce")
    for col in ("ood_flag", "cell_found"):
        if col in scores:
            scores[col] = scores[col].map({"True": True, "False": False}).where(scores[col] != "", "")
    return ScoredBatch(batch=batch, folder=Path(folder), bundle=b, scores=scores, notes=list(meta.get("notes", [])))
