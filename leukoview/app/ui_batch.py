"""The batch page's sections (Streamlit): choosing images, the scored batch's summary, the review panel, the
gallery, the table and the sign-off. Every section takes the :class:`~leukoview.app.scored.ScoredBatch`, so decisions,
sign-off, report and export use the model that scored the batch, whatever the sidebar shows now. The page
(``pages/2_Batch_Review.py``) only composes them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from leukoview.app import batch, charts, gallery, review, ui, ui_signoff
from leukoview.app.scored import ScoredBatch
from leukoview.jobs import explain
from leukoview.primitives import settings, vocab
from leukoview.primitives.images import UPLOAD_TYPES, ImageError, load_image

KEYS_ON = "review_keys"
SHOWN_KEY = "review_shown"  # the open cell and the id of the decision the panel showed for it


def choose_images(roots: list[Path]) -> tuple[str, Path, list[str]] | None:
    """The images to score: a folder under a data root (kept in the URL as ?folder=), uploaded files or a zip, or
    an uploaded folder. Returns (batch id, folder, notes) or None."""
    source = st.radio("Images from", ["a folder in the data root", "uploaded files or a zip", "an uploaded folder"],
                      horizontal=True, key="batch_source")
    if source.startswith("a folder"):
        folders = batch.image_folders(roots)
        if not folders:
            st.info(f"No image folders under the data root(s) {', '.join(map(str, roots))}. Set "
                    "LEUKOVIEW_DATA_ROOT or upload files instead.")
            return None
        labels = [f"{roots[i].name}/{rel} ({n} images)" if rel != "." else f"{roots[i].name} ({n} images)"
                  for i, rel, n in folders]
        ids = [f"{i}:{rel}" for i, rel, _ in folders]  # the folder's id in the URL (?folder=)
        if "batch_folder" not in st.session_state and st.query_params.get("folder") in ids:
            st.session_state["batch_folder"] = ids.index(st.query_params["folder"])
        k = st.selectbox("Folder (scored recursively)", range(len(folders)), format_func=labels.__getitem__,
                         key="batch_folder")
        if st.query_params.get("folder") != ids[k]:
            st.query_params["folder"] = ids[k]
        i, rel, _ = folders[k]
        try:
            return f"{roots[i]}::{rel}", batch.resolve_inside(roots[i], rel), []
        except batch.BoundaryError as e:
            st.error(str(e))
            return None
    whole = source == "an uploaded folder"
    ups = st.file_uploader("A folder of images (subfolders included)" if whole else "Images or .zip archives",
                           accept_multiple_files="directory" if whole else True,
                           type=[*UPLOAD_TYPES, *([] if whole else ["zip"])],
                           key="batch_folder_upload" if whole else "batch_upload")
    return batch.upload_batch([(u.name, u.getvalue()) for u in ups], settings.review_dir() / "uploads") \
        if ups else None


def summary(sb: ScoredBatch) -> pd.DataFrame:
    """The batch's counts and warnings; returns the scored cells."""
    df = sb.scores
    for note in sb.notes:
        st.warning(f"Skipped: {note}")
    errors = df[df["error"] != ""]
    readable = df[df["error"] == ""]
    gated, ok = readable[readable["gate"] != ""], sb.cells()
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
        st.warning(f"{seen_n} of these images are in {sb.model}'s training or validation split (column 'in "
                   "training'): seen in training, their scores are not evidence of performance. Filter them out "
                   "below.")
    elif "in_training" in ok and (ok["in_training"] == "unknown").any():
        st.caption(f"{sb.model} records no training-set membership: `python -m leukoview seen "
                   f"{sb.bundle.path}` adds it.")
    if "cell_found" in ok:
        lost = int((ok["cell_found"] == False).sum())  # noqa: E712 (object column)
        if lost:
            st.warning(f"No cell found in {lost} image(s): the model scored the whole image there, which it was "
                       "not trained to read (column 'cell found').")
    if len(ok) and float(ood.mean()) > 0.5:
        st.warning(f"{float(ood.mean()):.0%} of these images are unlike {sb.model}'s training data "
                   "(out-of-distribution): its scores are probably meaningless here. Is this the right model for "
                   "these images?")
    if len(errors):
        with st.expander(f"{len(errors)} files could not be read"):
            st.dataframe(errors[["file", "error"]], hide_index=True, width="stretch")
    return ok


def open_store() -> tuple[review.ReviewStore | None, str]:
    try:
        return review.ReviewStore(), ""
    except review.ReviewStoreError as e:
        return None, f"Reviewer decisions are unavailable: {e}"


def record(sb: ScoredBatch, store: review.ReviewStore | None, reviewer: str, key_id: str, row: dict,
           comment: str = "") -> str:
    """Save what ``key_id`` means for the cell ``row``; returns the message to show."""
    if store is None or key_id in ("next", "previous"):
        return ""
    if not reviewer:
        return "error:Enter your name in the sidebar first: decisions are recorded with the reviewer's name."
    opened = st.session_state.get(SHOWN_KEY)  # (file, decision id) the panel showed for the open cell
    if opened is not None and opened[0] == row["file"]:
        shown = opened[1]
    else:  # not drawn by the panel yet (a first key): what the store holds now
        latest = store.latest(sb.batch)
        mine = latest[latest["file"] == row["file"]]
        shown = int(mine["id"].iloc[0]) if len(mine) else None
    try:
        d = sb.decision(key_id, row, reviewer=reviewer, comment=comment)
        store.record(d, shown=shown)  # another reviewer's decision since the panel was drawn: a ConflictError
    except (ValueError, review.ReviewStoreError) as e:  # includes ConflictError
        return f"error:Not saved: {e}"
    shown = d.label if d.action != "second_review" else "second review"
    return f"Saved: {row['file']} → {shown}"


def _click(key_id: str) -> None:
    st.session_state["review_click"] = key_id


def _cam(sb: ScoredBatch, model, row: dict, img):
    return ui.explanation(model, sb.bundle, img, f"{sb.batch}::{row['file']}", "Grad-CAM", None,
                          with_faithfulness=False)


def _open(pos: int) -> None:
    st.session_state["review_pos"] = pos
    st.session_state.pop("review_msg", None)


def _handle_keys(sb: ScoredBatch, rows: list[dict], store, reviewer: str, keyboard: bool) -> int:
    """The key or button pressed since the last run, recorded and moved on; returns the open cell's position."""
    n = len(rows)
    pressed = None
    if keyboard:
        from leukoview.app import ui_keys  # keys typed into a text field are ignored there

        keys = gallery.key_map(sb.classes)
        ui_keys.activate([ui_keys.hk(k.id, k.key, help=k.help) for k in keys], key="review")
        pressed = next((k.id for k in keys if ui_keys.pressed(k.id, key="review")), None)
    pressed = pressed or st.session_state.pop("review_click", None)
    pos = min(int(st.session_state.get("review_pos", 0)), max(n - 1, 0))
    if pressed and n:
        msg = record(sb, store, reviewer, pressed, rows[pos], st.session_state.get("review_comment", ""))
        if not msg.startswith("error:"):
            pos = gallery.step(pos, n, pressed)
            st.session_state.pop("review_comment", None)
            st.session_state["gallery_page"] = gallery.page_of(pos, gallery.PER_PAGE)  # the gallery follows the key
        st.session_state["review_msg"] = msg
    st.session_state["review_pos"] = pos
    return pos


@st.fragment
def review_area(sb: ScoredBatch, queue: pd.DataFrame, ok: pd.DataFrame, store, reviewer: str) -> None:
    """The gallery, the open cell with its keys, and the differential and sign-off below, as one fragment: a key
    records the decision first, then the badges, the counts and the sign-off are drawn from the store, so each
    decision shows everywhere at once without redrawing the rest of the page."""
    rows = queue.to_dict("records")
    keyboard = st.toggle("Keyboard review", key=KEYS_ON,
                         help="Keys act on the open cell: → / j next, ← / k previous, Enter / c confirm, 1-9 "
                              "reclassify, u unidentified, s second review. Keys typed into a text field are text; "
                              "the reviewer name is locked meanwhile.")
    shown = st.session_state.get("_review_keys_shown")
    st.session_state["_review_keys_shown"] = keyboard
    if shown is not None and shown != keyboard:
        st.rerun()  # the whole page, not only this fragment: the sidebar's name field locks (or unlocks) at once
    pos = _handle_keys(sb, rows, store, reviewer, keyboard)
    latest = store.latest(sb.batch) if store is not None else None  # after this run's decision
    current = gallery.current_decisions(latest)
    g_left, g_right = st.columns([3, 2], gap="medium")
    with g_right:  # the open cell first: what the reviewer waits for reaches the browser before the gallery
        _panel(sb, rows, pos, latest, current, keyboard, queue)
    with g_left:
        _gallery_grid(sb, queue, current, pos)
    # the panel shows the differential as a table at every key; the chart is drawn in the table view
    ui_signoff.sign_off_section(sb, ok, store, reviewer, decisions=latest, chart=False)
    _prefetch_next(sb, rows, pos)


def _gallery_grid(sb: ScoredBatch, queue: pd.DataFrame, current: dict, pos: int) -> None:
    per_page = gallery.PER_PAGE
    pages = gallery.page_count(len(queue), per_page)
    p1, p2 = st.columns([1, 3])
    page_no = p1.number_input("Gallery page", 1, pages, gallery.page_of(pos, per_page), key="gallery_page")
    p2.caption(f"{len(queue)} cells in {pages} page(s) of {per_page}, grouped by predicted class (positive types "
               "first, then the rest, unidentified last), most suspicious first. Press a cell's button to open it "
               f"on the right. {gallery.SYMBOL_LEGEND}")
    part = gallery.gallery_page(queue, page_no, per_page)
    for group, cells in part.groupby("group", sort=False):
        st.markdown(f"**{group}** ({int((queue['group'] == group).sum())})")
        grid = st.columns(6)
        for j, r in enumerate(cells.to_dict("records")):
            with grid[j % 6]:
                thumb = ui.thumbnail(str(sb.folder / r["file"]))
                if thumb:
                    st.image(thumb, width="stretch")
                tags = gallery.badges(r, current.get(r["file"]))
                st.button(f"{r['suspicion']:.0%} {gallery.symbols(tags)}".strip(), key=f"open::{r['pos']}",
                          help=f"{r['file']} · {', '.join(tags) or 'new'}", width="stretch",
                          type="primary" if r["pos"] == pos else "secondary", on_click=_open, args=(int(r["pos"]),))


def _panel(sb: ScoredBatch, rows: list[dict], pos: int, latest, current: dict, keyboard: bool,
           queue: pd.DataFrame) -> None:
    n = len(rows)
    if n == 0:
        st.info("No cells match the filter.")
        return
    row = rows[pos]
    msg = st.session_state.get("review_msg", "")
    # always one message line, so that the elements below keep their places and the browser updates them in place
    if msg.startswith("error:"):
        st.error(msg[6:])
    elif msg:
        st.success(msg)
    else:
        st.info("Keys and buttons act on this cell; each decision is saved at once.")
    decided = current.get(row["file"])
    st.session_state[SHOWN_KEY] = (row["file"], int(decided["id"]) if decided else None)
    tags = gallery.badges(row, decided)
    st.markdown(f"**Cell {pos + 1} of {n}** · `{row['file']}` · group **{row['group']}** · predicted "
                f"**{row['predicted']}** {row['suspicion']:.1%}" + (f" · {' · '.join(tags)}" if tags else ""))
    b = st.columns(2)
    b[0].button("◀ Previous", key="rv_prev", on_click=_click, args=("previous",), width="stretch")
    b[1].button("Next ▶", key="rv_next", on_click=_click, args=("next",), width="stretch")
    b = st.columns(3)
    b[0].button("✓ Confirm", key="rv_confirm", on_click=_click, args=("confirm",), type="primary", width="stretch")
    b[1].button("Unidentified", key="rv_unid", on_click=_click, args=("unidentified",), width="stretch")
    b[2].button("2nd review", key="rv_second", on_click=_click, args=("second_review",), width="stretch")
    r1, r2 = st.columns([2, 1])
    r1.selectbox("Reclassify as", range(len(sb.classes)), format_func=lambda j: (
        f"{j + 1} · {sb.classes[j]}" if j < 9 else sb.classes[j]), key="rv_class", label_visibility="collapsed")
    r2.button("Reclassify", key="rv_reclass", on_click=lambda: _click(f"class:{st.session_state['rv_class']}"),
              width="stretch")
    if not keyboard:
        st.text_input("Comment (saved with the next decision)", key="review_comment", max_chars=2000)
    try:
        img = load_image(sb.folder / row["file"])
    except ImageError as e:
        st.error(str(e))
        return
    c1, c2 = st.columns(2)
    if st.session_state.get("rv_zoom_on"):  # plotly's zoom/pan view: costs ~0.5 s a cell to draw in the browser
        c1.plotly_chart(charts.cell_figure(np.asarray(img)), width="stretch",
                        config={"scrollZoom": True, "displaylogo": False}, key="rv_zoom")
        c1.caption(f"Original, {img.width}x{img.height} px: scroll to zoom, drag to pan, double-click to reset")
    else:
        c1.image(img, width="stretch", caption=f"Original, {img.width}x{img.height} px (click ⤢ for full screen)")
    c1.toggle("Zoom and pan", key="rv_zoom_on", help="A zoomable view of the original (slower to move between "
              "cells)")
    model = ui.predictor(sb.bundle)
    if model is not None and model.explainable:
        ex = _cam(sb, model, row, img)
        shown = explain.overlay(*explain.on_original(ex, img)) if ex.crop is not None else \
            explain.overlay(ex.image, ex.mask)
        c2.image(shown, caption=f"Grad-CAM for '{ex.target}'" + (" (boxed: the cell the network read)"
                                                                 if ex.crop is not None else ""), width="stretch")
    elif model is not None:
        c2.caption("Classical model on image features: no class-activation map.")
    table, diff = gallery.review_differential(queue, latest, sb.classes, sb.positive)
    st.markdown(f"**Differential** — reviewed {diff['reviewed']} of {diff['cells']}; {ui.positive_name(sb.bundle)}: "
                f"pre-classified {diff['positive_percent_pre']:.1f}%, reviewed "
                + (f"{diff['positive_percent_reviewed']:.1f}%" if diff["classed_reviewed"] else "—")
                + f" (the {diff['reference_percent']:.0f}% line)")
    st.dataframe(gallery.compact(table), hide_index=True, width="stretch", key="rv_diff",
                 height=ui.table_height(len(table)))


def _prefetch_next(sb: ScoredBatch, rows: list[dict], pos: int) -> None:
    """The next cell's map, made after everything else is drawn, so that the next key shows it from the cache."""
    model = ui.predictor(sb.bundle) if pos + 1 < len(rows) else None
    if model is None or not model.explainable:
        return
    try:
        _cam(sb, model, rows[pos + 1], load_image(sb.folder / rows[pos + 1]["file"]))
    except (ImageError, ValueError, RuntimeError):
        pass  # that cell shows its own message when it is opened


def table_view(sb: ScoredBatch, view: pd.DataFrame, n_cells: int, decisions, store, reviewer: str) -> None:
    s1, _ = st.columns([1, 3])
    sort = s1.selectbox("Sort by", ["suspicion ↓", "suspicion ↑", "file", "ood_score ↓"], key="batch_sort")
    tview = batch.with_decisions(batch.sort_scores(view, sort), decisions)
    st.caption(f"{len(tview)} of {n_cells} images match. Click a column header to re-sort; select a row to open it.")
    event = st.dataframe(batch.table_for_page(tview, sb.folder), hide_index=True, width="stretch", height=420,
                         on_select="rerun", selection_mode="single-row", key="batch_table",
                         column_config=ui.batch_columns())
    rows = event.selection.rows if event is not None else []
    if not rows:
        return
    row = tview.iloc[rows[0]]
    st.subheader(f"{row['file']}")
    try:
        img = load_image(sb.folder / row["file"])
    except ImageError as e:
        st.error(str(e))
        return
    model = ui.predictor(sb.bundle)
    if model is not None and not model.explainable:
        st.image(img, caption=f"suspicion {row['suspicion']:.1%} · predicted {row['predicted']} (classical "
                 "model: no class-activation map)", width=360)
    elif model is not None:
        a, b = st.columns(2)
        ex = ui.explanation(model, sb.bundle, img, f"{sb.batch}::{row['file']}", "Grad-CAM", None)
        a.image(ex.image, caption=f"suspicion {row['suspicion']:.1%} · predicted {row['predicted']}",
                width="stretch")
        b.image(explain.overlay(ex.image, ex.mask), caption=f"Grad-CAM for '{ex.target}'", width="stretch")
    if store is None:
        return
    now = decisions[decisions["file"] == row["file"]] if decisions is not None else None
    shown = int(now["id"].iloc[0]) if now is not None and len(now) else None
    if shown is not None:
        c = now.iloc[0]
        st.info(f"Current decision: **{review.ACTION_LABELS[c['action']]}** {c['label']} by "
                f"{c['reviewer']} at {c['created_at']}" + (f" — “{c['comment']}”" if c["comment"] else ""))
    with st.form(f"decide::{row['file']}", clear_on_submit=False):
        action = st.radio("Decision", review.ACTIONS, format_func=review.ACTION_LABELS.get, horizontal=True)
        label = st.selectbox("Corrected label (for an override)", [*sb.classes, vocab.REVIEWED_UNIDENTIFIED],
                             index=sb.classes.index(row["predicted"]))
        comment = st.text_area("Comment", max_chars=2000)
        if st.form_submit_button("Save decision", type="primary"):
            try:
                store.record(sb.decide(row.to_dict(), action, label, reviewer=reviewer, comment=comment), shown=shown)
                st.success("Saved.")
                st.rerun()
            except (ValueError, review.ReviewStoreError) as e:  # includes ConflictError
                st.error(f"Not saved: {e}")
