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

from . import gallery, report, review
from .bundle import Bundle


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
        :func:`leukoview.gallery.decision_label`)."""
        return review.Decision(batch=self.batch, file=row["file"], action=action,
                               label=gallery.decision_label(action, row, label), comment=comment,
                               reviewer=reviewer, model=self.model, suspicion=float(row["suspicion"]))

    def sign_off(self, *, reviewer: str, table: pd.DataFrame, summary: dict, decisions: pd.DataFrame | None,
                 comment: str = "") -> review.SignOff:
        """The sign-off of this batch's differential, recording the model that scored it."""
        return review.SignOff(
            batch=self.batch, folder=str(self.folder), reviewer=reviewer, model=self.model,
            model_sha256=self.bundle.card.weights_sha256, threshold=float(self.threshold), cells=summary["cells"],
            reviewed=summary["reviewed"], differential=gallery.differential_json(table), comment=comment,
            last_decision=int(decisions["id"].max()) if decisions is not None and len(decisions) else None)

    def report(self, *, queue: pd.DataFrame, decisions: pd.DataFrame | None, table: pd.DataFrame, summary: dict,
               sign_off: dict | None, positive_name: str) -> str:
        return report.render(folder=str(self.folder), queue=queue, decisions=decisions, table=table,
                             summary=summary, card=self.bundle.card, metrics=self.bundle.metrics, sign_off=sign_off,
                             positive=self.positive, positive_name=positive_name)

    def export(self, decisions: pd.DataFrame) -> pd.DataFrame:
        return review.export_table(self.scores, decisions, model=self.model, threshold=self.threshold,
                                   folder=str(self.folder))
