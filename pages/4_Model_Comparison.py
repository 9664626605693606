"""Model comparison: every bundle of the selected task, from bundle files only."""
import streamlit as st

from leukoview import audits
from leukoview.app import charts, compare, ui, ui_compare

bundle = ui.page("Model comparison", "⚖️")
if bundle is None:
    st.stop()
task = bundle.task
same_task = [b for b in ui.bundles() if b.task == task]
st.markdown(f"Task **{ui.task_title(bundle)}**: {len(same_task)} bundle(s). Figures come from each "
            "bundle's metrics.json and stored test predictions.")
if line := compare.recommended_line(task, same_task):
    st.success(line)
table = compare.comparison_table(same_task)
shown_table = compare.readable(compare.key_metrics_first(table.drop(columns=["task", "split"])))
st.dataframe(shown_table, hide_index=True, width="stretch", height=ui.table_height(len(shown_table)),
             column_config=ui.comparison_columns())
with st.expander("Audits run on these bundles"):
    st.dataframe(compare.audits_table(same_task), hide_index=True, width="stretch")
    st.caption(" · ".join(f"`{a.name}`: {a.what}" for a in audits.REGISTRY.values()))
splits = table["split"].nunique()
if splits > 1:
    st.warning(f"These bundles were evaluated on {splits} different splits: compare figures with care; the "
               "paired test below needs the same split.")

audit = ui.shortcut_audits().get(task)
if audit:
    (st.warning if audit["level"] == "high" else st.info)(f"**Shortcut audit:** {audit['message']}")
    with st.expander("Non-cell cues alone, next to the models (trivial classifiers, same train/test split)"):
        st.dataframe(compare.shortcut_rows(audit), hide_index=True, width="stretch",
                     column_config={k: st.column_config.NumberColumn(k, format="%.3f") for k in
                                    ("balanced accuracy", "accuracy", "positive-class ROC-AUC")})
        st.caption("Cues: image size, JPEG quantisation tables, border, corner and bright-background colour. "
                   "`python -m leukoview shortcuts BUNDLE` recomputes them.")

ranked = table.sort_values(["ROC-AUC", "balanced accuracy"], ascending=False)["model"].tolist()
default = list(dict.fromkeys([bundle.id, *ranked]))[:6]
shown = st.multiselect("Curves and per-class recall for", ranked, default=default, key=f"cmp_shown_{task}",
                       help="Default: the model chosen in the sidebar and the best by ROC-AUC (six at most)")
chosen = [b for b in same_task if b.id in shown]
roc, pr = [], []
for b in chosen:
    ta = ui.analysis(b)
    if ta is None:
        continue
    cv = ta.curves()
    roc.append((b.id, cv["fpr"], cv["tpr"], ta.roc_auc))
    pr.append((b.id, cv["recall"], cv["precision"], ta.pr_auc))
a, c = st.columns(2)
a.plotly_chart(charts.roc_figure(roc), width="stretch")
c.plotly_chart(charts.pr_figure(pr), width="stretch")
if chosen:
    st.plotly_chart(charts.per_class_recall_figure(compare.per_class_recall(chosen)), width="stretch")

cam_table = compare.cam_table(same_task)
if len(cam_table):
    st.subheader("Where the Grad-CAM maps look (test split)")
    st.dataframe(cam_table, hide_index=True, width="stretch",
                 column_config={k: st.column_config.NumberColumn(k, format="%.3f") for k in cam_table.columns
                                if k.endswith(("mass", "area"))})
    st.caption("Share of the map's mass on stained pixels (cells), background and the four corners, next to the "
               "share of the image's area: a map that looks at the cells puts more mass on them than their area. "
               "`python -m leukoview camstats BUNDLE` computes it.")

wide = compare.balanced_accuracy_by_shift(same_task)
if len(wide):
    st.subheader("Shift test: the test split re-rendered")
    st.dataframe(wide, width="stretch", column_config={c: st.column_config.NumberColumn(c, format="%.3f")
                                                       for c in wide.columns})
    st.caption("Balanced accuracy on the same test images under each shift (stain jitter in HED space, background "
               "recoloured to another class's, zoom, blur, JPEG). `python -m leukoview shift BUNDLE` computes it; "
               "sensitivity, specificity and AUC per shift are in each bundle's metrics.json.")
cells = compare.cells_table(same_task)
cells = cells[cells.filter(like="bg → ").notna().any(axis=1)] if len(cells) else cells
if len(cells):
    st.subheader("Cells or background? The evidence side by side")
    st.dataframe(compare.readable(cells), hide_index=True, width="stretch",
                 column_config={k: st.column_config.NumberColumn(k, format="%.3f") for k in cells.columns
                                if cells[k].dtype.kind == "f"})
    st.caption("Per model: the test split at the shipped threshold; with the background removed (to black, to "
               "white, another image's background: ROC-AUC and the fall in balanced accuracy from the unshifted "
               "images); Grad-CAM mass on stained pixels (overall, and the class with the least); external "
               "single-cell sets (ROC-AUC with a bootstrap interval by patient, share OOD-flagged). "
               "`python -m leukoview compare --section cells` prints it.")
ood_table = compare.ood_table(same_task)
if len(ood_table):
    st.subheader("Out-of-distribution flag: what it catches and what it costs")
    summary = compare.ood_summary(same_task)
    st.dataframe(summary, hide_index=True, width="stretch", key="ood_summary", height=ui.table_height(len(summary)))
    st.caption("Per model: false flags on its own test split (the cost), other tasks' cells flagged (the wrong "
               "task; C-NMC never used in fitting), generated non-cell images refused by the input gate or flagged "
               "(photographs, noise, gradients, drawn text, and two held-out kinds: matplotlib photo crops and "
               "charts), and how many of those would still get a verdict; which extra checks the model has (the "
               "wrong-task detector, the palette check). "
               "Per set:")
    st.dataframe(ood_table, hide_index=True, width="stretch",
                 column_config={"flag rate": st.column_config.NumberColumn("flag rate", format="%.3f")})
    st.caption("Own test split: the false-flag cost. Other sets: generated non-cell images and another dataset's "
               "cells. *Called positive, not flagged*: images from outside the model's world that it calls "
               "suspicious without a warning — the case to watch. `python -m leukoview oodeval BUNDLE` computes it.")

cmp_table = compare.ood_compare_table(same_task)
if len(cmp_table):
    st.subheader("Which out-of-distribution score? Mahalanobis (shipped) against kNN, energy and MSP")
    st.dataframe(cmp_table, hide_index=True, width="stretch",
                 column_config={k: st.column_config.NumberColumn(k, format="%.3f") for k in cmp_table.columns
                                if k not in ("model", "image set")})
    st.caption("Each score thresholded at the 99th percentile of validation. *flagged*: share of the set caught "
               "(on the own test split: false flags); *AUROC*: how well the score separates the set from the own "
               "test split. `python -m leukoview oodscores BUNDLE` computes it.")

ext_table = compare.external_table(same_task)
if len(ext_table):
    st.subheader("Another lab's images: external evaluation")
    st.dataframe(compare.readable(ext_table), hide_index=True, width="stretch",
                 column_config={k: st.column_config.NumberColumn(k, format="%.3f") for k in ext_table.columns
                                if k not in ("model", "external set", "images")})
    st.caption("Each bundle scored on a labelled folder from another source (never trained or tuned on). "
               "*Normal cells called positive*: false alarms at the shipped threshold; *positive, not flagged*: "
               "false alarms with no out-of-distribution warning; *own type*: share of each folder's cells called "
               "their own type (empty: a type the model was not trained on). `python -m leukoview external FOLDER "
               "--bundle B` computes it; intervals per class are in each bundle's metrics.json.")

ui_compare.patients_and_adaptation(same_task)

st.subheader("Paired test on the same test images (McNemar)")
ids = [b.id for b in same_task]
if len(ids) < 2:
    st.info("Only one bundle for this task: train another architecture to compare (README, 'Training').")
else:
    x, y = st.columns(2)
    first = x.selectbox("Model A", ids, index=0, key=f"cmp_a_{task}")
    second = y.selectbox("Model B", ids, index=1, key=f"cmp_b_{task}")
    if first == second:
        st.info("Pick two different models.")
    else:
        try:
            r = compare.mcnemar(same_task[ids.index(first)], same_task[ids.index(second)])
            st.markdown(f"On {r['images']} shared test images: both right {r['both_right']}, both wrong "
                        f"{r['both_wrong']}, only A right {r['only_a_right']}, only B right {r['only_b_right']}. "
                        f"Exact McNemar p = {r['p_value']:.3g}: {r['reading']}.")
        except ValueError as e:
            st.warning(str(e))
