"""The single-image page's class-activation section (Streamlit): method and target, the overlays with their opacity,
faithfulness and where the map's mass lies. Fragments: a method, target or opacity change reruns only this."""
from __future__ import annotations

import numpy as np
import streamlit as st

from leukoview.app import ui
from leukoview.audits import camstats
from leukoview.jobs import explain


@st.fragment
def cam_images(bundle, ex, original, on_original) -> None:
    """The overlays and their opacity slider: an opacity move reruns only this, a blend of cached arrays."""
    opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.45, 0.05, key="cam_opacity")
    if original is None:
        i1, i2 = st.columns(2)
    else:
        i0, i1, i2 = st.columns(3)
        i0.image(explain.overlay(original, on_original, opacity=opacity),
                 caption=f"{ex.method} on the original, with the located cell's box", width="stretch")
    normalised = ", colours normalised" if bundle.card.input.get("colour") else ""
    i1.image(ex.image, caption=f"Input as the network sees it ({ex.image.shape[1]} px{normalised})",
             width="stretch")
    i2.image(explain.overlay(ex.image, ex.mask, opacity=opacity),
             caption=f"{ex.method} for class '{ex.target}'", width="stretch")

@st.fragment
def cam_section(bundle, model, img, image_key: str, pred, cells, per_cell) -> None:
    """Only this part reruns when the method or target moves; the network's pass is cached per image and
    target, each method's map per method, so a method change recomputes a map from cached activations."""
    o1, o2 = st.columns(2)
    method = o1.selectbox("Method", explain.METHODS, key="cam_method")
    target = o2.selectbox("Target class", bundle.classes, key="cam_target", help="Default: the predicted class")
    try:
        with st.spinner("Computing the class-activation map…"):
            ex = ui.explanation(model, bundle, img, image_key, method, target,
                                crop=cells[int(np.argmax(per_cell["suspicion"]))] if cells else None,
                                every_method=True)
    except (ValueError, RuntimeError) as e:
        st.error(f"The map could not be computed: {e}")
        return
    original, mapped = explain.on_original(ex, img) if ex.crop is not None else (None, None)
    cam_images(bundle, ex, original, mapped)
    f = ex.faithfulness
    st.markdown(f"**Faithfulness:** {explain.faithfulness_sentence(f, ex.target)} Reading: {f['reading']}.")
    shares = camstats.image_stats(ex)
    st.caption("Map mass (share of image area): " + ", ".join(
        f"{name} {shares[name]['mass']:.0%} ({shares[name]['area']:.0%})" for name in camstats.REGIONS) +
        ". Stained = saturated pixels (cells); a map that looks at cells puts more mass there than their area.")
