"""leukoview home: what it is, the shipped models (from their cards), and a guide to the pages."""
import streamlit as st

from leukoview import home, ui

chosen = ui.page("leukoview", "🩸")
st.markdown(home.INTRO)
st.warning(ui.DISCLAIMER)

st.subheader("Shipped models")
bundles = ui.bundles()
if bundles:
    recommended = [b for b in bundles if home.is_recommended(b)] or bundles
    st.markdown(home.models_markdown(recommended))
    st.caption(home.TABLE_NOTE)
    if len(recommended) < len(bundles):
        st.caption(f"{len(bundles) - len(recommended)} more bundles — the model zoo, classical baselines and "
                   "comparison runs — are on the **Model Comparison** page and in the sidebar's model list.")
    for level, text in home.shortcut_notes(ui.shortcut_audits(), sorted({b.card.get("task", "") for b in bundles})):
        (st.warning if level == "high" else st.info)(text)
else:
    st.info("No model bundles found. Train one with `python -m leukoview train --config configs/…` (README).")

if chosen is not None:
    st.subheader(f"Selected: {chosen.id}")
    left, right = st.columns(2)
    left.markdown(home.model_summary(chosen))
    right.markdown(home.split_summary(chosen))

st.subheader("Pages")
for name, text in home.PAGE_GUIDE:
    st.markdown(f"**{name}** — {text}")
st.caption(home.SAMPLE_NOTE)
