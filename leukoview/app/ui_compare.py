"""Two sections of the comparison page (Streamlit): per-patient agreement with the signed count (Bland-Altman), and
adapted bundles against their base on a laboratory's held-out cells."""
from __future__ import annotations

import streamlit as st

from leukoview import audits
from leukoview.app import charts, compare


def patients_and_adaptation(same_task: list) -> None:
    agreeing = [(b, r) for b in same_task if (r := audits.result(b, audits.PATIENTS))]
    if agreeing:
        st.subheader("Per-patient blast % against the signed count (test patients)")
        for b, r in agreeing:
            st.markdown(compare.patients_line(b, r))
            st.plotly_chart(charts.bland_altman_figure(r, f"{b.id}: model − signed, per patient"), width="stretch")
        st.caption("As a laboratory validates a cell counter: per test patient, the model's % of classed cells called "
                   "blast against the % the technologists signed. `python -m leukoview patients BUNDLE` computes it.")

    adapted = compare.adaptation_table(same_task)
    if len(adapted):
        st.subheader("Adapted to a laboratory: base vs adapted on the site's held-out cells")
        st.dataframe(adapted, hide_index=True, width="stretch")
        st.caption("Each adapted bundle was fitted on half of the site's confirmed cells and read on the other half "
                   "(never fitted on); intervals per type are in its card. `python -m leukoview adapt` makes one.")
