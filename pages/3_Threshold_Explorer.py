"""Threshold explorer: the stored test predictions of a bundle under a movable threshold (no inference)."""
import streamlit as st

from leukoview.app import charts, threshold, ui
from leukoview.primitives import metrics

bundle = ui.page("Threshold explorer", "🎚️")
if bundle is None:
    st.stop()
ta = ui.analysis(bundle)
if ta is None:
    st.stop()
pos_name = ui.positive_name(bundle)
st.markdown(f"Stored **test-split** predictions of `{bundle.id}`: {ta.P} images truly {pos_name}, {ta.N} not. "
            f"Moving the threshold re-reads them; the network is not run again.")
overlap = threshold.score_overlap(ta.y, ta.s)
if overlap < 0.05:
    choices = threshold.teaching_choices(ui.score_overlaps())
    st.info(f"`{bundle.id}` separates its test images almost completely ({overlap:.1%} of them score where "
            "positives and negatives overlap), so moving the threshold trades almost nothing here."
            + (" For teaching, a model whose trade-off is visible: " + ", ".join(
                f"**{b}** ({o:.0%} in the overlap)" for b, o in choices) + " (choose it in the sidebar)."
               if choices else ""))

presets = ta.presets(bundle.threshold)
PRESET_KEY = "te_threshold"


def _apply_preset():
    choice = st.session_state["te_preset"]
    if choice in presets:
        st.session_state[PRESET_KEY] = float(round(presets[choice], 4))


if PRESET_KEY not in st.session_state or st.session_state.get("te_bundle") != bundle.id:
    st.session_state[PRESET_KEY] = float(round(bundle.threshold, 4))
    st.session_state["te_bundle"] = bundle.id


@st.fragment
def explorer():
    c1, c2, c3 = st.columns([2, 3, 2])
    c1.selectbox("Preset", ["chosen value", *presets], key="te_preset", on_change=_apply_preset,
                 help="0.5, the shipped operating threshold, Youden's J, or the highest threshold that keeps "
                      "sensitivity at least 95% on this test split")
    t = c2.slider("Threshold (flag when suspicion ≥ threshold)", 0.0, 1.0, step=threshold.GRID_STEP, key=PRESET_KEY,
                  format="%.4f")
    prevalence = c3.number_input("Prevalence in the screened population (%)", 0.01, 100.0, 5.0, 0.5,
                                 key="te_prev") / 100
    p = ta.at(t)
    ci = ta.bootstrap(t)
    k = st.columns(6)
    k[0].metric("Sensitivity", f"{p.sensitivity:.3f}", help=f"95% CI {ci['sensitivity'][0]:.3f}–"
                                                           f"{ci['sensitivity'][1]:.3f}")
    k[1].metric("Specificity", f"{p.specificity:.3f}", help=f"95% CI {ci['specificity'][0]:.3f}–"
                                                           f"{ci['specificity'][1]:.3f}")
    k[2].metric("PPV (test mix)", f"{p.ppv:.3f}")
    k[3].metric("NPV (test mix)", f"{p.npv:.3f}")
    k[4].metric("F1", f"{p.f1:.3f}")
    k[5].metric("Accuracy", f"{p.accuracy:.3f}")
    ppv, npv = metrics.predictive_values(p.sensitivity, p.specificity, prevalence)
    st.markdown(f"At **{prevalence:.1%} prevalence** (a screening population rather than this test split's mix): "
                f"**PPV {ppv:.3f}** — share of flagged people who have {pos_name}; **NPV {npv:.4f}** — share of "
                "cleared people who do not.")
    ex_sens = metrics.exact_ci(p.tp, p.tp + p.fn)
    ex_spec = metrics.exact_ci(p.tn, p.tn + p.fp)
    st.caption(f"95% intervals — bootstrap resampling by {ta.unit}: sensitivity {ci['sensitivity'][0]:.3f}–"
               f"{ci['sensitivity'][1]:.3f}, specificity {ci['specificity'][0]:.3f}–{ci['specificity'][1]:.3f}; "
               f"exact per image (Clopper-Pearson): sensitivity {ex_sens[0]:.3f}–{ex_sens[1]:.3f} "
               f"({p.tp}/{p.tp + p.fn}), specificity {ex_spec[0]:.3f}–{ex_spec[1]:.3f} ({p.tn}/{p.tn + p.fp}).")
    st.info(threshold.describe(p, prevalence, positive_name=pos_name, unit=ta.unit))

    a, b = st.columns(2)
    a.plotly_chart(charts.confusion_heatmap(p.tp, p.fp, p.tn, p.fn, positive_name=pos_name,
                                            negative_name="other"), width="stretch", key="te_cm")
    h = ta.histogram()
    b.plotly_chart(charts.score_distributions(h["edges"], h["positive"], h["negative"], t), width="stretch",
                   key="te_hist")
    cv = ta.curves()
    r1, r2 = st.columns(2)
    r1.plotly_chart(charts.roc_figure([(bundle.id, cv["fpr"], cv["tpr"], ta.roc_auc)],
                                      (1 - p.specificity, p.sensitivity)), width="stretch", key="te_roc")
    r2.plotly_chart(charts.pr_figure([(bundle.id, cv["recall"], cv["precision"], ta.pr_auc)],
                                     (p.sensitivity, p.ppv)), width="stretch", key="te_pr")

    st.subheader("Two thresholds side by side")
    ref = st.slider("Reference threshold", 0.0, 1.0, 0.5, threshold.GRID_STEP, key="te_ref", format="%.4f")
    q = ta.at(ref)
    st.markdown(f"**{threshold.compare(p, q, prevalence, unit=ta.unit)}**")
    left, right = st.columns(2)
    for col, point, name in ((left, p, "current"), (right, q, "reference")):
        col.markdown(f"**{name}: {point.threshold:.4f}** — sensitivity {point.sensitivity:.3f}, specificity "
                     f"{point.specificity:.3f}")
        col.caption(threshold.describe(point, prevalence, positive_name=pos_name, unit=ta.unit))


explorer()

st.subheader("Calibration of the suspicion score")
bins = metrics.calibration_bins(ta.s, ta.y, n_bins=10)
st.plotly_chart(charts.reliability_diagram(bins, metrics.binary_ece(ta.y, ta.s, n_bins=10),
                                           metrics.brier(ta.y, ta.s)), width="stretch")
st.caption("Points on the diagonal mean a score of x% is followed by disease x% of the time on this test split. "
           "Marker size grows with the number of images in the bin.")
