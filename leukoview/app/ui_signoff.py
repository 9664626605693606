"""The batch page's closing sections (Streamlit): the differential as pre-classified and as reviewed, the sign-off
form, the report and export downloads, and the per-patient view. Each takes the
:class:`~leukoview.app.scored.ScoredBatch`, so the sign-off, report and export record the model that scored the
batch. The report and the export are made when their button is pressed, from what the store holds then: drawing
them on every review key cost the server more than the key itself."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from leukoview.app import charts, decisions_import, gallery, review, ui
from leukoview.app.report import report_name
from leukoview.app.scored import ScoredBatch
from leukoview.models import differential


@dataclass
class SignOffView:
    """The batch as its sign-off, report and differential read it: the store's current decisions, every cell's
    queue (not a filter), the differential and the sign-offs so far."""
    decisions: pd.DataFrame | None
    queue: pd.DataFrame
    table: pd.DataFrame
    diff: dict
    signed: pd.DataFrame | None

    @property
    def last(self) -> dict | None:
        return self.signed.iloc[-1].to_dict() if self.signed is not None and len(self.signed) else None


def view_of(sb: ScoredBatch, ok: pd.DataFrame, store: review.ReviewStore | None, decisions=None) -> SignOffView:
    """:class:`SignOffView` from the store now; ``decisions``: the store's current ones, when the caller just read
    them."""
    if decisions is None and store is not None:
        decisions = store.latest(sb.batch)
    queue = gallery.review_queue(ok, sb.classes, sb.positive)
    table, diff = gallery.review_differential(queue, decisions, sb.classes, sb.positive)
    return SignOffView(decisions, queue, table, diff, store.sign_offs(sb.batch) if store is not None else None)


def report_bytes(sb: ScoredBatch, ok: pd.DataFrame, store: review.ReviewStore | None,
                 positive_name: str) -> Callable[[], bytes]:
    """The HTML report as the store holds the batch when called: every cell, its decisions, the differential, the
    last sign-off and the audit trail's head."""
    def make() -> bytes:
        v = view_of(sb, ok, store)
        return sb.report(queue=v.queue, decisions=v.decisions, table=v.table, summary=v.diff, sign_off=v.last,
                         positive_name=positive_name, trail_head=store.head() if store is not None else "").encode()
    return make


def export_bytes(sb: ScoredBatch, store: review.ReviewStore) -> Callable[[], bytes]:
    """The scores and the current decisions as CSV, as the store holds them when called."""
    return lambda: sb.export(store.latest(sb.batch)).to_csv(index=False).encode()


def sign_off_section(sb: ScoredBatch, ok: pd.DataFrame, store, reviewer: str, *, decisions=None,
                     chart: bool = True) -> None:
    """The differential as pre-classified and reviewed, the sign-off form and the downloads; the sign-off, report
    and export record the batch's model. ``decisions``: as for :func:`view_of`; ``chart``: draw the differential
    chart (the gallery's panel shows the differential as a table instead)."""
    v = view_of(sb, ok, store, decisions)
    st.subheader("Differential and sign-off")
    if chart and len(sb.classes) > 2:
        st.plotly_chart(charts.review_differential_figure(v.table, v.diff["reference_percent"]), width="stretch")
    st.caption(f"{v.diff['cells']} cells; reviewed {v.diff['reviewed']}, {v.diff['pending']} waiting for a second "
               "review. Unidentified cells, second-review and unreviewed cells are counted but left out of the "
               "percentages, as in clinical cell-review software. Pre-classification is the model's; only the "
               "reviewed column is a reviewer's result.")
    patients = gallery.patient_review(v.queue, v.decisions, sb.positive)
    if not patients.empty and ui.per_patient(sb.bundle):
        st.markdown("**Per patient**")
        st.dataframe(patients, hide_index=True, width="stretch")
    last = v.last
    if last is not None:
        st.success(f"Signed off by **{last['reviewer']}** at {last['created_at']} (model {last['model']}, threshold "
                   f"{last['threshold']:.4g}, {last['reviewed']} of {last['cells']} cells reviewed)"
                   + (f"; {len(v.signed)} sign-offs in all" if len(v.signed) > 1 else ""))
    if store is not None:
        _sign_off_form(sb, store, reviewer, v.table, v.diff, v.decisions)
    d1, d2 = st.columns(2)
    d1.download_button("Download the report (HTML)" + ("" if last else ", draft: not signed off"),
                       report_bytes(sb, ok, store, ui.positive_name(sb.bundle)), file_name=report_name(str(sb.folder)),
                       mime="text/html", key="batch_report", on_click="ignore")
    if store is not None:
        d2.download_button("Download scores and decisions (CSV)", export_bytes(sb, store),
                           file_name=review.export_name(str(sb.folder)), mime="text/csv", key="batch_export",
                           on_click="ignore")


def _sign_off_form(sb: ScoredBatch, store: review.ReviewStore, reviewer: str, table: pd.DataFrame, diff: dict,
                   decisions) -> None:
    with st.form("signoff"):
        unreviewed = diff["cells"] - diff["reviewed"]
        note = st.text_input("Sign-off comment (optional)", max_chars=2000)
        agree = st.checkbox(f"Sign off with {unreviewed} cell(s) not reviewed and {diff['pending']} waiting for "
                            "a second review" if unreviewed or diff["pending"] else
                            "I have reviewed every cell of this folder", key="signoff_agree")
        st.caption(f"The sign-off records the model that scored this folder: {sb.model} (threshold "
                   f"{sb.threshold:.4g}, weights sha256 {sb.bundle.card.weights_sha256[:12]}…).")
        ident = ui.current_identity()
        if not ident.may_sign_off:
            st.caption(f"Only a supervisor signs off a slide; {ident.name} is signed in as a {ident.role}.")
        if not st.form_submit_button("Sign off this folder", type="primary"):
            return
        if not reviewer:
            st.error("Enter your name in the sidebar first: a sign-off is recorded with the reviewer's name.")
        elif not ident.may_sign_off:
            st.error("Not signed off: only a supervisor signs off a slide.")
        elif not agree:
            st.error("Tick the box to confirm what you are signing off.")
        else:
            try:
                store.sign_off(sb.sign_off(reviewer=reviewer, table=table, summary=diff,
                                           decisions=decisions, comment=note, mode=ident.mode))
                st.rerun()
            except (ValueError, review.ReviewStoreError) as e:
                st.error(f"Not signed off: {e}")


def patients_section(sb: ScoredBatch, ok: pd.DataFrame) -> None:
    summary_ = differential.per_patient(ok, sb.positive)
    if summary_.empty:
        return
    if not ui.per_patient(sb.bundle):
        st.info(f"File names carry patient ids, but {sb.model} ({ui.task_title(sb.bundle)}) does not score single "
                "cells of these patients' kind: a per-patient share of its calls would not mean what a chart "
                "suggests, so none is drawn. Choose a single-cell model for the per-patient view.")
        return
    st.subheader("Per patient")
    st.plotly_chart(charts.patient_figure(summary_, 100 * differential.REFERENCE, ui.positive_name(sb.bundle)),
                    width="stretch")
    st.dataframe(summary_, hide_index=True, width="stretch")


def import_section(sb: ScoredBatch, store: review.ReviewStore | None, reviewer: str) -> None:
    """Decisions from a CSV this page exported (another server, an offline copy), recorded under the signed-in
    user; cells decided here already are skipped, never overwritten."""
    if store is None:
        return
    with st.expander("Import decisions from a CSV export"):
        st.caption("A file from *Download scores and decisions* of this folder, scored with the same model. Each "
                   f"decision is recorded under your name ({reviewer or 'enter it in the sidebar'}) with a comment "
                   "naming the file and whom it names as the decider; cells already decided here are skipped.")
        done_msg = st.session_state.pop("decisions_import_done", None)  # after the rerun that shows them above
        if done_msg:
            st.success(done_msg[0])
            if done_msg[1]:
                st.dataframe(pd.DataFrame({"skipped": done_msg[1]}), hide_index=True, width="stretch")
        up = st.file_uploader("Decisions CSV", type=["csv"], key="decisions_csv")
        if up is None or not st.button("Import", key="decisions_import"):
            return
        if not reviewer:
            st.error("Enter your name in the sidebar first: imported decisions are recorded under it.")
            return
        try:
            decided = set(store.latest(sb.batch)["file"])
            p = decisions_import.plan(up.getvalue(), sb, reviewer=reviewer, source=up.name, decided=decided)
            done, skipped = decisions_import.apply(store, p)
        except (decisions_import.DecisionsCSVError, review.ReviewStoreError, ValueError) as e:
            st.error(f"Not imported: {e}")
            return
        st.session_state["decisions_import_done"] = (
            f"Imported {done} decision(s) from {up.name}" + (f"; {len(skipped)} row(s) skipped:" if skipped else "."),
            skipped)
        st.rerun()  # the gallery, counts and sign-off above show the imported decisions
