"""The batch page's "Adapt to this laboratory" section (Streamlit): this laboratory's confirmed cells per type and,
with enough, adaptation of the batch's model in a background thread (other pages keep working)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from leukoview.app import review, ui
from leukoview.app.scored import ScoredBatch
from leukoview.primitives import settings

_ADAPT_JOBS: dict[str, dict] = {}  # one background adaptation per base model and site, shared by every session


def _run_adaptation(job: dict, base_path: Path, cells: pd.DataFrame, site: str, out: Path) -> None:
    from leukoview.jobs import adapt

    def progress(fraction: float, what: str) -> None:
        job.update(fraction=fraction, what=what)

    try:
        adapt.adapt(base_path, cells, site=site, out=out, source="reviews", progress=progress)
        job.update(state="done", fraction=1.0, what="done")
    except Exception as e:  # shown on the page; the reviewer's decisions are not touched either way
        job.update(state="failed", error=f"{type(e).__name__}: {e}")


def adapt_section(sb: ScoredBatch, store) -> None:
    """This laboratory's confirmed cells per type (signed-off slides) and, once there are enough, adaptation of the
    batch's model to them in the background (a new bundle; the base is never changed)."""
    import threading

    from leukoview.jobs import site_cells

    if store is None or not sb.bundle.is_network or sb.bundle.card.adapted:
        return
    site = settings.site()
    try:
        cells = site_cells.site_from_reviews(store, sb.classes)
    except review.ReviewStoreError as e:
        st.error(f"Confirmed cells are unavailable: {e}")
        return
    counts = site_cells.counts_per_type(cells, sb.classes)
    key = f"{sb.bundle.id}::{site}"
    job = _ADAPT_JOBS.get(key)
    with st.expander(f"Adapt {sb.model} to this laboratory ({site}): {len(cells)} confirmed cells in signed-off "
                     "slides", expanded=job is not None and job["state"] == "running"):
        st.dataframe(pd.DataFrame([{"type": c, "confirmed cells": counts.get(c, 0),
                                    "needed": 2 * site_cells.MIN_PER_TYPE} for c in sb.classes]),
                     hide_index=True, width="stretch", height=ui.table_height(len(sb.classes)))
        st.caption("Cells a reviewer confirmed or reclassified on slides that were signed off (unidentified and "
                   "second-review cells are left out). Half of them, by slide, teach the model; the other half "
                   "check it. Set LEUKOVIEW_SITE to name this laboratory.")
        out = settings.models_dir() / f"{sb.bundle.id}-{site}"
        if job is not None and job["state"] == "running":
            _adapt_progress(key)
            return
        if job is not None and job["state"] == "done":
            ui.forget_bundles()
            st.success(f"Adapted model written: **{out.name}**. Choose it in the model picker (the comparison page "
                       "shows it against the base on this laboratory's held-out cells); choose "
                       f"{sb.bundle.id} to switch back.")
        elif job is not None:
            st.error(f"Adaptation failed: {job['error']}")
        try:
            site_cells.check_enough(cells, sb.classes)
        except site_cells.AdaptError as e:
            st.info(str(e))
            return
        if st.button("Adapt to this laboratory", key="adapt_start"):
            job = {"state": "running", "fraction": 0.0, "what": "starting"}
            _ADAPT_JOBS[key] = job
            threading.Thread(target=_run_adaptation, args=(job, sb.bundle.path, cells, site, out),
                             daemon=True).start()
            st.rerun()


@st.fragment(run_every=2)
def _adapt_progress(key: str) -> None:
    job = _ADAPT_JOBS.get(key, {})
    st.progress(float(job.get("fraction", 0.0)), text=f"Adapting in the background: {job.get('what', '')} "
                "(other pages keep working)")
    if job.get("state") != "running":
        st.rerun()
