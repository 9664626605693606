"""Batch review: score a folder, upload or zip; sort, filter, open a row; record reviewer decisions."""
from pathlib import Path

import streamlit as st

from leukoview import batch, charts, explain, review, settings, ui
from leukoview.images import UPLOAD_TYPES, ImageError, load_image
from leukoview.predict import find_images, score_files

bundle = ui.page("Batch review", "🗂️")
if bundle is None:
    st.stop()
reviewer = ui.reviewer_name()
roots = settings.data_roots()

source = st.radio("Images from", ["a folder in the data root", "uploaded files or a zip", "an uploaded folder"],
                  horizontal=True, key="batch_source")
job = None  # (batch id, folder, notes)
if source.startswith("a folder"):
    folders = batch.image_folders(roots)
    if not folders:
        st.info(f"No image folders under the data root(s) {', '.join(map(str, roots))}. Set LEUKOVIEW_DATA_ROOT "
                "or upload files instead.")
    else:
        labels = [f"{roots[i].name}/{rel} ({n} images)" if rel != "." else f"{roots[i].name} ({n} images)"
                  for i, rel, n in folders]
        k = st.selectbox("Folder (scored recursively)", range(len(folders)), format_func=labels.__getitem__,
                         key="batch_folder")
        i, rel, _ = folders[k]
        try:
            job = (f"{roots[i]}::{rel}", batch.resolve_inside(roots[i], rel), [])
        except batch.BoundaryError as e:
            st.error(str(e))
else:
    whole = source == "an uploaded folder"
    ups = st.file_uploader("A folder of images (subfolders included)" if whole else "Images or .zip archives",
                           accept_multiple_files="directory" if whole else True,
                           type=[*UPLOAD_TYPES, *([] if whole else ["zip"])],
                           key="batch_folder_upload" if whole else "batch_upload")
    if ups:
        job = batch.upload_batch([(u.name, u.getvalue()) for u in ups], settings.review_dir() / "uploads")

state = st.session_state.get("batch_result")
if job is not None and st.button(f"Score with {bundle.id}", type="primary", key="batch_score"):
    model = ui.predictor(bundle)
    if model is not None:
        bid, folder, notes = job
        paths = find_images(folder)
        bar = st.progress(0.0, text=f"Scoring {len(paths)} images…")
        df = score_files(paths, model, base=folder,
                         progress=lambda d, t: bar.progress(d / max(t, 1), text=f"Scored {d} of {t}"))
        bar.empty()
        state = {"batch": bid, "folder": str(folder), "model": bundle.id, "threshold": bundle.threshold,
                 "scores": df, "notes": notes}
        st.session_state["batch_result"] = state

if not state:
    st.info("Choose images and press Score. Decisions are saved per batch and reviewer and survive restarts.")
    st.stop()
if state["model"] != bundle.id:
    st.warning(f"These scores come from {state['model']}; press Score to rescore with {bundle.id}.")

df, folder, bid = state["scores"], Path(state["folder"]), state["batch"]
for note in state["notes"]:
    st.warning(f"Skipped: {note}")
errors = df[df["error"] != ""]
ok = df[df["error"] == ""]
gated, ok = ok[ok["gate"] != ""], ok[ok["gate"] == ""]
if len(gated):
    st.warning(f"{len(gated)} file(s) are not blood-smear images and got no score (no model sees them).")
    with st.expander("Why each was refused"):
        st.dataframe(gated[["file", "gate"]], hide_index=True, width="stretch")
m1, m2, m3, m4, m5 = st.columns(5)
m1.metric("Images scored", len(ok))
m2.metric("Above threshold", int((ok["decision"] == "positive").sum()))
ood = ok["ood_flag"] == True  # noqa: E712 (object column: True, False or "" for errors)
m3.metric("Out-of-distribution", int(ood.sum()))
seen_n = int(ok["in_training"].isin(["train", "val"]).sum()) if "in_training" in ok else 0
m4.metric("Seen in training", seen_n, help="In the model's train or validation split (same file or a near copy)")
m5.metric("Unreadable", len(errors))
if seen_n:
    st.warning(f"{seen_n} of these images are in {bundle.id}'s training or validation split (column 'in "
               "training'): seen in training, their scores are not evidence of performance. Filter them out below.")
elif "in_training" in ok and (ok["in_training"] == "unknown").any():
    st.caption(f"{bundle.id} records no training-set membership: `python -m leukoview seen {bundle.path}` adds it.")
if "cell_found" in ok:
    lost = int((ok["cell_found"] == False).sum())  # noqa: E712 (object column)
    if lost:
        st.warning(f"No cell found in {lost} image(s): the model scored the whole image there, which it was not "
                   "trained to read (column 'cell found').")
ood_share = float(ood.mean()) if len(ok) else 0.0
if ood_share > 0.5:
    st.warning(f"{ood_share:.0%} of these images are unlike {bundle.id}'s training data (out-of-distribution): "
               "its scores are probably meaningless here. Is this the right model for these images?")
if len(bundle.classes) > 2 and len(ok):
    table, diff = batch.differential(df, bundle.classes, bundle.positive)
    st.subheader("Differential count")
    d1, d2 = st.columns([2, 1])
    d1.plotly_chart(charts.differential_figure(table, diff["reference_percent"]), width="stretch")
    d2.metric(f"{ui.positive_name(bundle)} of classed cells", f"{diff['positive_percent']:.1f}%",
              delta=f"{'at or above' if diff['at_or_above_reference'] else 'below'} the "
                    f"{diff['reference_percent']:.0f}% line", delta_color="inverse" if diff["at_or_above_reference"]
              else "off")
    d2.caption(f"{diff['classed']} cells classed by the model; {diff['unidentified']} unidentified "
               "(out of distribution) are left out of the percentages, as in clinical cell-review software. "
               "Pre-classification only: every cell needs a reviewer's confirmation.")
    d2.dataframe(table.drop(columns=["positive"]), hide_index=True, width="stretch",
                 column_config={"percent": st.column_config.NumberColumn("%", format="%.1f")})
if len(errors):
    with st.expander(f"{len(errors)} files could not be read"):
        st.dataframe(errors[["file", "error"]], hide_index=True, width="stretch")

store = None
try:
    store = review.ReviewStore()
    decisions = store.latest(bid)
except review.ReviewStoreError as e:
    st.error(f"Reviewer decisions are unavailable: {e}")
    decisions = None

st.subheader("Filter and sort")
f1, f2, f3, f4, f5 = st.columns([2, 2, 1, 1, 1])
lo, hi = f1.slider("Suspicion score range", 0.0, 1.0, (0.0, 1.0), 0.01, key="batch_range")
cls = f2.multiselect("Predicted class", bundle.classes, key="batch_classes")
flagged = f3.checkbox("OOD only", key="batch_ood", help="Only images flagged as out-of-distribution")
sort = f4.selectbox("Sort by", ["suspicion ↓", "suspicion ↑", "file", "ood_score ↓"], key="batch_sort")
seen_filter = f5.selectbox("Training set", batch.SEEN_FILTERS, key="batch_seen",
                           help="Images in the model's train or validation split say nothing about its performance")
view = batch.filter_scores(ok, score_range=(lo, hi), classes=cls, flagged_only=flagged, seen=seen_filter)
view = batch.sort_scores(view, sort)
view = batch.with_decisions(view, decisions)
shown = batch.table_for_page(view, folder)
st.caption(f"{len(view)} of {len(ok)} images match. Click a column header to re-sort; select a row to open it.")
event = st.dataframe(shown, hide_index=True, width="stretch", height=420, on_select="rerun",
                     selection_mode="single-row", key="batch_table",
                     column_config=ui.batch_columns())
rows = event.selection.rows if event is not None else []

if rows:
    row = view.iloc[rows[0]]
    st.subheader(f"{row['file']}")
    try:
        img = load_image(folder / row["file"])
    except ImageError as e:
        st.error(str(e))
        st.stop()
    model = ui.predictor(bundle)
    if model is not None and not model.explainable:
        st.image(img, caption=f"suspicion {row['suspicion']:.1%} · predicted {row['predicted']} (classical model: "
                 "no class-activation map)", width=360)
    elif model is not None:
        a, b = st.columns(2)
        ex = explain.explain(model, img, method="Grad-CAM")
        a.image(ex.image, caption=f"suspicion {row['suspicion']:.1%} · predicted {row['predicted']}",
                width="stretch")
        b.image(explain.overlay(ex.image, ex.mask), caption=f"Grad-CAM for '{ex.target}'", width="stretch")
    if store is not None:
        current = decisions[decisions["file"] == row["file"]] if decisions is not None else None
        seen = int(current["id"].iloc[0]) if current is not None and len(current) else None
        if seen is not None:
            c = current.iloc[0]
            st.info(f"Current decision: **{review.ACTION_LABELS[c['action']]}** {c['label']} by {c['reviewer']} "
                    f"at {c['created_at']}" + (f" — “{c['comment']}”" if c["comment"] else ""))
        with st.form(f"decide::{row['file']}", clear_on_submit=False):
            action = st.radio("Decision", review.ACTIONS, format_func=review.ACTION_LABELS.get, horizontal=True)
            label = st.selectbox("Corrected label (for an override)", bundle.classes,
                                 index=bundle.classes.index(row["predicted"]))
            comment = st.text_area("Comment", max_chars=2000)
            if st.form_submit_button("Save decision", type="primary"):
                try:
                    store.record(review.Decision(batch=bid, file=row["file"], action=action,
                                                 label=label if action == "override" else
                                                 (row["predicted"] if action == "confirm" else ""),
                                                 comment=comment, reviewer=reviewer, model=bundle.id,
                                                 suspicion=float(row["suspicion"])), seen=seen)
                    st.success("Saved.")
                    st.rerun()
                except (ValueError, review.ReviewStoreError) as e:  # includes ConflictError
                    st.error(f"Not saved: {e}")

summary = batch.patient_summary(ok)
if not summary.empty and not ui.per_patient(bundle):
    st.info(f"File names carry patient ids, but {bundle.id} ({ui.task_title(bundle)}) does not score single cells "
            "of these patients' kind: a per-patient share of its calls would not mean what a chart suggests, so "
            "none is drawn. Choose a single-cell ALL model for the per-patient view.")
elif not summary.empty:
    st.subheader("Per patient")
    st.plotly_chart(charts.patient_figure(summary, batch.PATIENT_REFERENCE), width="stretch")
    st.dataframe(summary, hide_index=True, width="stretch")

if decisions is not None:  # read above; a save reruns the page, so it is current
    export = review.export_table(df, decisions, model=state["model"], threshold=state.get("threshold"),
                                 folder=str(folder))
    st.download_button("Download scores and decisions (CSV)", export.to_csv(index=False).encode(),
                       file_name=review.export_name(str(folder)), mime="text/csv", key="batch_export")
