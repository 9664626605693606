"""Batch review: score a folder, upload or zip; review its cells in a gallery grouped by class (keyboard or
buttons), with the differential as pre-classified and as reviewed; sign off and download the report; or work in
the table. The scored batch keeps the model that scored it: decisions, sign-off, report and export use that
model even after the sidebar switches to another (leukoview.app.scored)."""

import streamlit as st

from leukoview.app import batch, gallery, scored, ui, ui_adapt, ui_signoff
from leukoview.app import ui_batch as view
from leukoview.app.scored import ScoredBatch
from leukoview.jobs.predict import find_images, score_files
from leukoview.primitives import settings

bundle = ui.page("Batch review", "🗂️")
if bundle is None:
    st.stop()
reviewer = ui.reviewer_name(locked=bool(st.session_state.get(view.KEYS_ON)))
job = view.choose_images(settings.data_roots())  # (batch id, folder, notes) or None

sb: ScoredBatch | None = st.session_state.get("batch_result")
if job is not None and (sb is None or sb.batch != job[0]):  # a reload or a return: the scores kept for it, if any
    kept = scored.restore(job[0], job[1], bundle)
    if kept is not None:
        sb = st.session_state["batch_result"] = kept
        st.caption(f"Scores restored from the last scoring of this folder with {bundle.id} (the folder has not "
                   "changed since); press Score to score it again.")
if job is not None and st.button(f"Score with {bundle.id}", type="primary", key="batch_score"):
    model = ui.predictor(bundle)
    if model is not None:
        bid, folder, notes = job
        paths = find_images(folder)
        bar = st.progress(0.0, text=f"Scoring {len(paths)} images…")
        df = score_files(paths, model, base=folder,
                         progress=lambda d, t: bar.progress(d / max(t, 1), text=f"Scored {d} of {t}"))
        bar.empty()
        sb = ScoredBatch(batch=bid, folder=folder, bundle=bundle, scores=df, notes=notes)
        st.session_state["batch_result"] = sb
        scored.save(sb)
        st.session_state["review_pos"] = 0
        ui.long_lived()

if sb is None:
    st.info("Choose images and press Score. Decisions are saved per batch and reviewer and survive restarts.")
    st.stop()
ui.adapted_note(sb.bundle, st.info)
if not sb.scored_with(bundle):
    st.warning(f"These scores come from **{sb.model}**: decisions, the sign-off and the report record that model. "
               f"Press Score to rescore with {bundle.id}.")

ok = view.summary(sb)
store, problem = view.open_store()
if problem:
    st.error(problem)
decisions = store.latest(sb.batch) if store is not None else None

st.subheader("Filter")
f1, f2, f3, f4 = st.columns([2, 2, 1, 1])
lo, hi = f1.slider("Suspicion score range", 0.0, 1.0, (0.0, 1.0), 0.01, key="batch_range")
cls = f2.multiselect("Predicted class", sb.classes, key="batch_classes")
flagged = f3.checkbox("OOD only", key="batch_ood", help="Only images flagged as out-of-distribution")
seen_filter = f4.selectbox("Training set", batch.SEEN_FILTERS, key="batch_seen",
                           help="Images in the model's train or validation split say nothing about its performance")
filtered = batch.filter_scores(ok, score_range=(lo, hi), classes=cls, flagged_only=flagged, seen=seen_filter)
mode = st.radio("View", ["Cell gallery", "Table"], horizontal=True, key="batch_view",
                help="Gallery: cells grouped by predicted class, most suspicious first, reviewed one by one. "
                     "Table: every score, sortable.")
if mode == "Cell gallery":  # one fragment: a decision updates the badges, counts and sign-off at once
    view.review_area(sb, gallery.review_queue(filtered, sb.classes, sb.positive), ok, store, reviewer)
else:
    view.table_view(sb, filtered, len(ok), decisions, store, reviewer)
    ui_signoff.sign_off_section(sb, ok, store, reviewer)
ui_signoff.patients_section(sb, ok)
ui_signoff.import_section(sb, store, reviewer)
ui_adapt.adapt_section(sb, store)
