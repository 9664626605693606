"""Single image: probabilities, decision, OOD warning, Grad-CAM with faithfulness, optional TTA."""
import numpy as np
import streamlit as st

from leukoview.app import advice, charts, samples, ui, ui_single
from leukoview.jobs import explain
from leukoview.primitives import images, segment

bundle = ui.page("Single image", "🔍")
if bundle is None:
    st.stop()

TYPES = images.UPLOAD_TYPES
tab_upload, tab_paste, tab_camera, tab_sample = st.tabs(["Upload", "Paste", "Camera", "Sample image"])
with tab_upload:
    up = st.file_uploader(f"Image ({images.ACCEPTED}) — drag and drop or browse", type=TYPES,
                          key="single_upload")
with tab_paste:
    pasted = st.chat_input("Click here, paste an image (Ctrl+V / ⌘V) and press Enter", accept_file=True,
                           file_type=TYPES, key="single_paste")
    if pasted is not None and pasted.files:
        st.session_state["single_pasted"] = (pasted.files[0].name, pasted.files[0].getvalue())
    if "single_pasted" in st.session_state:
        st.caption(f"Pasted: {st.session_state['single_pasted'][0]}")
        if st.button("Clear pasted image", key="single_paste_clear"):
            del st.session_state["single_pasted"]
            st.rerun()
with tab_camera:
    cam = st.camera_input("Photograph a smear through the eyepiece", key="single_camera")
with tab_sample:
    avail = samples.available_samples()
    if avail.empty:
        st.info("No sample images yet: run `python -m leukoview sample-data` (copies the files listed in "
                "sample_data/manifest.csv from the data root).")
        pick = None
    else:
        options = ["—"] + [f"{r.dataset} · {r.label} · {r.file.rsplit('/', 1)[-1]}" for r in avail.itertuples()]
        choice = st.selectbox("Sample", options, key="single_sample")
        pick = None if choice == "—" else avail.iloc[options.index(choice) - 1]

source, name = None, ""
if up is not None:
    source, name = up.getvalue(), up.name
elif "single_pasted" in st.session_state:
    name, source = st.session_state["single_pasted"]
elif cam is not None:
    source, name = cam.getvalue(), "camera"
elif pick is not None:
    source, name = pick["path"], pick["file"]
    st.caption(f"True class (from the dataset): **{pick['label']}** · {pick['licence']}")

if source is None:
    st.info("Upload, paste or photograph an image, or pick a sample, to score it.")
    st.stop()

try:
    img = images.load_image(source, name=name)
except images.ImageError as e:
    st.error(f"This file cannot be scored: {e}")
    st.stop()

refused = segment.smear_gate(img)
if refused:
    st.error(f"**{refused[:1].upper() + refused[1:]}.** No model scores it. leukoview reads Romanowsky-stained "
             "(e.g. May-Grünwald-Giemsa, Wright) blood smears: one white cell or a field of cells.")
    st.stop()
model = ui.predictor(bundle)
if model is None:
    st.stop()
cells = per_cell = None
if model.cell_level:  # one forward: the image's prediction, its cells and each cell's scores
    pred, cells, per_cell = model.predict_cells(img)
else:
    pred = model.predict(img)
seen = model.seen_split(source, img)
if seen in ("train", "val"):
    st.warning(f"**Seen in training** ({seen} split of {bundle.id}, this file or a near copy): this score is not "
               "evidence of performance.")
# a new image (or model) starts from the defaults: the map explains the predicted class by Grad-CAM, no TTA
image_key = images.digest(source)  # the image's identity: the controls' reset and the maps' cache key
ui.reset_on_new("single_image", (bundle.id, image_key),
                {"cam_method": explain.METHODS[0], "cam_target": pred.predicted, "tta": False})
reading = advice.read_prediction(pred.suspicion, model.threshold, pred.predicted, bundle.positive,
                                 ood=pred.ood_flag, task_positive_name=ui.positive_name(bundle))

crop = None if model.cell_level else model.locate(img)
if model.cell_level:
    if not any(c.found for c in cells):
        st.warning("No stained cell found in this image: the model scored the whole image, which it was not "
                   "trained to read.")
    else:
        st.caption(f"{len(cells)} stained cell(s) found and scored one by one; the image's result is the mean of "
                   "their logits. Boxes: red at or above the threshold, green below; numbers are the table's rows.")
        k1, k2 = st.columns([3, 2])
        k1.image(explain.draw_cells(img, cells, per_cell["suspicion"], model.threshold),
                 caption="Cells scored (1 = largest)", width="stretch")
        k2.dataframe(advice.cell_table(cells, per_cell, bundle.classes), hide_index=True, width="stretch",
                     column_config={"suspicion": st.column_config.ProgressColumn(
                         "suspicion", min_value=0.0, max_value=1.0, format="%.3f")})
elif crop is not None and not crop.found:
    st.warning("No cell found in this image (no stained nucleus stands out): the model scored the whole image, "
               "which it was not trained to read. Crop the image around one white cell and try again.")
elif crop is not None:
    st.caption(f"{crop.note[:1].upper()}{crop.note[1:]}. The model reads only the boxed square (drawn on the maps "
               "below).")
BOXES = {"low": st.success, "borderline": st.warning, "high": st.error, advice.CANNOT_ASSESS: st.warning}
box = BOXES[reading.band]
box(f"**{reading.band.upper()}** — {reading.headline}")
if pred.wrong_kind:
    st.caption(f"This is {pred.wrong_kind}.")
elif pred.ood_flag:
    st.caption(f"Out-of-distribution score {pred.ood_score:.1f} > flag threshold {model.ood_threshold:.1f}.")
    fits = ui.models_that_fit(img, bundle)
    if fits:
        st.info("Recommended model(s) of another task that do not flag this image: "
                + ", ".join(f"**{b.id}** ({ui.task_title(b)})" for b in fits)
                + ". If that task fits the image, choose it in the sidebar; a missing flag is not proof of fit.")
    else:
        st.info("None of the recommended models reads this image without a flag: it may not be a stained "
                "blood-cell image of a kind leukoview knows.")

charts_box = st.expander("Model outputs (not interpretable for this image)") if pred.ood_flag else st.container()
c1, c2 = charts_box.columns([1, 1])
c1.plotly_chart(charts.suspicion_gauge(pred.suspicion, model.threshold), width="stretch")
c2.plotly_chart(charts.probability_bars(pred.probabilities, bundle.positive), width="stretch")
n1, n2 = st.columns(2)
n1.markdown("**Next steps**\n" + "\n".join(f"- {s}" for s in reading.next_steps))
n2.markdown("**Limitations**\n" + "\n".join(f"- {s}" for s in reading.limitations))

st.subheader("Where did the model look?")
if not model.explainable:
    st.info(f"**{bundle.id}** is a classical model on image features "
            f"({bundle.card.input.get('feature_description', '')}): it has no class-activation map. "
            "Pick a network in the sidebar to see where a model looks.")
else:

    ui_single.cam_section(bundle, model, img, image_key, pred, cells, per_cell)

if st.checkbox("Test-time augmentation (8 flips and rotations)", key="tta"):
    scores = explain.tta_suspicion(model, img)
    st.plotly_chart(charts.tta_figure(scores, model.threshold), width="stretch")
    st.caption(f"Suspicion across views: min {scores.min():.1%}, median {float(np.median(scores)):.1%}, "
               f"max {scores.max():.1%}; {int((scores >= model.threshold).sum())} of 8 views above threshold.")
