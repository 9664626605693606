"""leukoview home: what it is, the shipped models (from their cards), and a guide to the pages."""
import streamlit as st

from leukoview.app import landing, ui

chosen = ui.page("leukoview", "🩸")
st.markdown(landing.INTRO)
st.warning(ui.DISCLAIMER)

bundles = ui.bundles()
if bundles:
    st.info(landing.where_to_start(bundles))

st.subheader("Shipped models")
if bundles:
    recommended = [b for b in bundles if landing.is_recommended(b)] or bundles
    st.markdown(landing.models_markdown(recommended))
    st.caption(landing.TABLE_NOTE)
    if len(recommended) < len(bundles):
        st.caption(f"{len(bundles) - len(recommended)} more bundles — the model zoo, classical baselines and "
                   "comparison runs — are on the **Model Comparison** page and in the sidebar's model list.")
    for level, text in landing.shortcut_notes(ui.shortcut_audits(), sorted({b.task for b in bundles})):
        (st.warning if level == "high" else st.info)(text)
else:
    st.info("No model bundles found. Train one with `python -m leukoview train --config configs/…` (README).")

if chosen is not None:
    st.subheader(f"Selected: {chosen.id}")
    left, right = st.columns(2)
    left.markdown(landing.model_summary(chosen))
    right.markdown(landing.split_summary(chosen))

st.subheader("Pages")
for name, text in landing.PAGE_GUIDE:
    st.markdown(f"**{name}** — {text}")
st.caption(landing.SAMPLE_NOTE)
