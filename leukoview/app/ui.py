"""The only leukoview module that imports Streamlit: page set-up, the shared model picker, cached loaders.

Torch is imported only when a page asks for a predictor, so Home renders without loading it.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from leukoview.models.bundle import Bundle, BundleError, bundle_problems, list_bundles, load_bundle
from leukoview.models.card import Card
from leukoview.primitives import settings, tasks

MODEL_KEY = "leukoview_model"  # plain session key: survives page switches (widget keys do not)
REVIEWER_KEY = "leukoview_reviewer"
NO_MODELS = ("No model bundles in `{folder}`, so there is nothing to score or show yet. Set LEUKOVIEW_MODELS_DIR "
             "to a folder of bundles, or train one: `python -m leukoview train --config "
             "configs/all4_efficientnet_lite0.yaml` (README, 'Training').")
DISCLAIMER = ("Research and education tool, **not a medical device**. Scores must not be used for diagnosis or "
              "treatment decisions.")


@st.cache_data(show_spinner=False)
def _cards(models_dir: str) -> list[tuple[str, Card]]:
    return [(str(b.path), b.card) for b in list_bundles(Path(models_dir), verify=False)]


def bundles() -> list[Bundle]:
    """Bundles in the models folder (cards only; weights are verified when a model is loaded)."""
    return [Bundle(Path(p), c) for p, c in _cards(str(settings.models_dir()))]


def shortcut_audits() -> dict:
    """Each task's shortcut audit, read from the bundles that carry one (`python -m leukoview shortcuts`)."""
    from leukoview.audits.shortcuts import by_task

    return by_task(bundles())


@st.cache_resource(show_spinner="Loading and verifying the model…")
def _predictor(path: str):
    from leukoview.jobs.predict import Predictor

    loaded = Predictor(load_bundle(path, verify=True))
    long_lived()
    return loaded


def long_lived() -> None:
    """Everything alive now (modules, the network, a scored batch) lives as long as the app or the review: moved
    out of the garbage collector's reach, a full collection no longer walks it (it paused review keys ~150 ms,
    python -m bench.review_flow). Objects made later are collected as usual."""
    import gc

    gc.freeze()


def predictor(b: Bundle):
    """The verified, cached network of a bundle, or None after showing why it cannot be used."""
    try:
        return _predictor(str(b.path))
    except (BundleError, RuntimeError, ValueError, OSError) as e:
        st.error(f"Model {b.id} cannot be used: {e}")
        return None


@st.cache_resource(show_spinner=False)
def _analysis(path: str):
    from leukoview.app.threshold import ThresholdAnalysis
    from leukoview.primitives.metrics import resampling_groups

    b = load_bundle(path, verify=True)
    pred = b.predictions()
    groups, unit = resampling_groups(pred)
    return ThresholdAnalysis(pred["positive"].to_numpy(), pred["suspicion"].to_numpy(), groups=groups, unit=unit)


@st.cache_data(ttl=60, show_spinner=False)
def _problems(models_dir: str) -> dict[str, str]:
    return bundle_problems(Path(models_dir))


@st.cache_data(show_spinner=False)
def _score_overlaps(models_dir: str) -> dict[str, tuple[float, float]]:
    from leukoview.app.threshold import score_overlap

    out = {}
    for b in list_bundles(Path(models_dir), verify=False):
        try:
            pred = b.predictions()
            out[b.id] = (score_overlap(pred["positive"].to_numpy(), pred["suspicion"].to_numpy()),
                         float(b.metrics.get("roc_auc", float("nan"))))
        except (OSError, KeyError, ValueError):
            continue
    return out


def score_overlaps() -> dict[str, tuple[float, float]]:
    """Each bundle's (share of test images in the positive/negative score overlap, ROC-AUC), for teaching."""
    return _score_overlaps(str(settings.models_dir()))


def analysis(b: Bundle):
    try:
        return _analysis(str(b.path))
    except (BundleError, ValueError, OSError) as e:
        st.error(f"The stored predictions of {b.id} cannot be used: {e}")
        return None


def page(title: str, icon: str = "🔬") -> Bundle | None:
    """Page config, title and the sidebar (model picker, data roots, disclaimer). Returns the chosen bundle."""
    st.set_page_config(page_title=f"{title} · leukoview", page_icon=icon, layout="wide")
    st.title(title)
    require_sign_in()  # with users configured, a signed-out user sees nothing else
    from leukoview.app.landing import is_recommended, picker_order

    found = picker_order(bundles())
    with st.sidebar:
        st.markdown("### Model")
        if not found:
            st.warning(f"No model bundles in `{settings.models_dir()}`.")
            chosen = None
        else:
            ids = [b.id for b in found]
            # the URL keeps the choice across reloads and bookmarks (?model=<id>); the session across pages
            current = st.session_state.get(MODEL_KEY) or st.query_params.get("model")
            index = ids.index(current) if current in ids else 0
            recommended = {b.id for b in found if is_recommended(b)}
            picked = st.selectbox("Model used on every page", ids, index=index, key="model_picker",
                                  format_func=lambda i: f"★ {i}" if i in recommended else i,
                                  help="★ the recommended model of each task first; the rest are the model zoo, "
                                       "classical baselines and comparison runs (Model Comparison page)")
            st.session_state[MODEL_KEY] = picked
            if st.query_params.get("model") != picked:
                st.query_params["model"] = picked
            chosen = found[ids.index(picked)]
            c = chosen.card
            st.caption(f"`{picked}`" + (" — ★ recommended" if picked in recommended else "") + "  \n"
                       f"**{tasks.task_title(c.task)}** · "
                       f"{c.architecture} · {len(c.classes)} classes · threshold {c.threshold:.3g} · "
                       f"{'ImageNet-initialised' if c.imagenet_initialised else 'trained from scratch'}")
            if c.adapted:
                adapted_note(chosen, st.info)
        for name, why in _problems(str(settings.models_dir())).items():
            st.error(f"Bundle `{name}` is not usable: {why}")
        st.markdown("---")
        st.caption(DISCLAIMER)
    if chosen is None:
        st.info(NO_MODELS.format(folder=settings.models_dir()))
    return chosen


CAM_CACHE_KEY = "leukoview_cam_cache"
CAM_CACHE_SIZE = 30  # six images' maps by every method


def _session_cache(name: str, key, make):
    cache = st.session_state.setdefault(name, {})
    if key not in cache:
        if len(cache) >= CAM_CACHE_SIZE:
            cache.pop(next(iter(cache)))
        cache[key] = make()
    return cache[key]


def explanation(model, b: Bundle, image, image_key: str, method: str, target: str, crop=None, *,
                with_faithfulness: bool = True, every_method: bool = False):
    """The Grad-CAM explanation of an image, cached in the session: the network's pass per (model, image, target)
    (:func:`explain.prepare`), the map per method on top of it. An opacity move re-blends the cached map; a method
    change recomputes the map from the cached activations and gradients without the network's backward pass, or,
    with ``every_method`` (the single-image page, whose method menu is one click away), finds it already made
    with the first: each method's map and faithfulness are computed when the image's pass is.
    ``crop``: the cell to explain, when the page has already located it."""
    from leukoview.jobs import explain

    prep = _session_cache(CAM_CACHE_KEY + "_prepared", (b.id, image_key, target),
                          lambda: explain.prepare(model, image, target=target, crop=crop))

    def one(m: str):
        return _session_cache(CAM_CACHE_KEY, (b.id, image_key, m, target, with_faithfulness),
                              lambda: explain.explain_prepared(model, prep, method=m,
                                                               with_faithfulness=with_faithfulness))

    shown = one(method)
    for other in explain.METHODS if every_method else ():
        one(other)
    return shown


def models_that_fit(image, current: Bundle) -> list[Bundle]:
    """Recommended models of other tasks that read ``image`` without an out-of-distribution flag and whose input
    kind fits it (a field model flags a single-cell image: :meth:`Predictor.wrong_kind`), never one whose external
    results are worse than chance (for a page that has to tell the reviewer this model does not fit the image)."""
    from leukoview.app.landing import is_recommended, worse_than_chance

    out = []
    for b in bundles():
        if b.id == current.id or b.task == current.task or not is_recommended(b) or worse_than_chance(b):
            continue
        p = predictor(b)
        if p is not None and not p.predict(image).ood_flag:
            out.append(b)
    return out


IDENTITY_KEY = "leukoview_identity"


def _oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file: Streamlit raises its own error type
        return False


def require_sign_in():
    """When sign-in is configured (OpenID Connect in .streamlit/secrets.toml, or a local users file), a signed-out
    user sees only the sign-in (the page stops); a signed-in one is shown in the sidebar with a sign-out button.
    Returns the :class:`~leukoview.app.users.Identity`, or None in demo mode (no users configured)."""
    from leukoview.app import users

    if _oidc_configured():
        if not st.user.is_logged_in:
            st.info("Sign in with your laboratory account to use leukoview.")
            st.button("Sign in", on_click=st.login, type="primary", key="oidc_login")
            st.stop()
        try:
            ident = users.oidc_identity(st.user.to_dict())
        except users.UserError as e:
            st.error(str(e))
            st.stop()
    elif users.configured():
        ident = st.session_state.get(IDENTITY_KEY)
        if ident is None or ident.mode != users.LOCAL:
            with st.form("sign_in"):
                st.markdown("**Sign in** — reviewers and supervisors of this laboratory (`python -m leukoview users "
                            "add NAME --role reviewer|supervisor` creates an account).")
                name = st.text_input("User name", key="sign_in_name")
                password = st.text_input("Password", type="password", key="sign_in_password")
                if st.form_submit_button("Sign in", type="primary"):
                    try:
                        st.session_state[IDENTITY_KEY] = users.sign_in(name, password)
                        st.rerun()
                    except users.UserError as e:
                        st.error(str(e))
            st.stop()
    else:
        return None
    st.session_state[IDENTITY_KEY] = ident
    with st.sidebar:
        st.markdown(f"Signed in as **{ident.name}** ({ident.role})")
        if st.button("Sign out", key="sign_out"):
            st.session_state.pop(IDENTITY_KEY, None)
            if ident.mode == users.OIDC:
                st.logout()
            st.rerun()
    return ident


def current_identity():
    """Who is working now: the signed-in user, or in demo mode the typed name (as supervisor: one person does
    everything, and every sign-off says it was made in demo mode)."""
    from leukoview.app import users

    ident = st.session_state.get(IDENTITY_KEY)
    if ident is not None and ident.mode != users.DEMO:
        return ident
    return users.Identity(st.session_state.get(REVIEWER_KEY, "").strip(), "supervisor", users.DEMO)


def reviewer_name(*, locked: bool = False) -> str:
    """The reviewer's name: the signed-in user's, or in demo mode the sidebar's typed name; ``locked`` (keyboard
    review is on) shows it read-only, so typing cannot fire review keys."""
    ident = st.session_state.get(IDENTITY_KEY)
    if ident is not None and ident.mode != "demo":
        return ident.name
    st.sidebar.warning("**Demo mode**: no sign-in is configured, so the name below is typed, not verified, and "
                       "sign-offs are marked as made in demo mode. `python -m leukoview users add` turns sign-in on.")
    if REVIEWER_KEY not in st.session_state:  # a reload: the URL keeps the name (?reviewer=)
        st.session_state[REVIEWER_KEY] = st.query_params.get("reviewer", "")[:200]
    name = st.sidebar.text_input("Reviewer name (recorded with decisions)",
                                 value=st.session_state.get(REVIEWER_KEY, ""), key="reviewer_input", disabled=locked,
                                 help="Locked while keyboard review is on" if locked else None)
    st.session_state[REVIEWER_KEY] = name
    if name.strip() and st.query_params.get("reviewer") != name.strip():
        st.query_params["reviewer"] = name.strip()
    return name.strip()


@st.cache_data(show_spinner=False, max_entries=20_000)
def thumbnail(path: str, size: int = 96) -> bytes:
    """A JPEG thumbnail of an image file (cached; empty bytes when unreadable), for the cell gallery."""
    from leukoview.app.batch import thumbnail_jpeg

    return thumbnail_jpeg(Path(path), size, quality=85)


def positive_name(b: Bundle) -> str:
    return tasks.positive_name(b.task, b.positive)


def task_title(b: Bundle) -> str:
    return tasks.task_title(b.task)


def per_patient(b: Bundle) -> bool:
    return tasks.per_patient(b.task)


def batch_columns() -> dict:
    return {"thumbnail": st.column_config.ImageColumn("image", width="small"),
            "suspicion": st.column_config.ProgressColumn("suspicion", min_value=0.0, max_value=1.0, format="%.3f"),
            "ood_flag": st.column_config.CheckboxColumn("out of distribution"),
            "ood_score": st.column_config.NumberColumn("OOD score", format="%.1f"),
            "in_training": st.column_config.TextColumn("in training", help="train / val: the image (or a near "
                                                       "copy) is in the model's split; its score is not evidence"),
            "cell_found": st.column_config.CheckboxColumn("cell found", help="False: no cell was located, the "
                                                                            "whole image was scored"),
            "review": st.column_config.TextColumn("review decision")}


def table_height(rows: int) -> int:
    """Pixels for a dataframe showing every one of ``rows`` rows (35 px a row, plus the header)."""
    return 38 + 35 * max(rows, 1)


def comparison_columns() -> dict:
    fmt = {k: st.column_config.NumberColumn(k, format="%.4f") for k in
           ("accuracy", "balanced accuracy", "ROC-AUC", "PR-AUC", "sensitivity", "specificity", "ECE")}
    fmt["threshold"] = st.column_config.NumberColumn("threshold", format="%.4g")
    fmt["parameters"] = st.column_config.NumberColumn("parameters", format="%d")
    fmt["note"] = st.column_config.TextColumn("note", width="medium",
                                              help="why the run departs from the architecture's defaults")
    return fmt


def adapted_note(b: Bundle, show=None) -> str:
    """The line every prediction of an adapted model carries: which site, from which base model, recommended or
    not (and how to switch back)."""
    r = b.card.adapted
    if not r:
        return ""
    text = (f"**Adapted model**: {b.id} is {r['base']['id']} adapted to site **{r['site']}** on "
            f"{sum(r['cells_used'].values())} confirmed cells" + ("" if r["recommended"] else
                                                                 " — **not recommended**: it did not beat the base "
                                                                 "model on the site's held-out cells")
            + f". Choose {r['base']['id']} in the model picker to switch back.")
    if show is not None:
        show(text)
    return text


def forget_bundles() -> None:
    """Drop the cached list of bundles (a new bundle was written)."""
    _cards.clear()
    _problems.clear()


def reset_on_new(name: str, key, values: dict) -> bool:
    """When ``key`` (e.g. the image's digest and the model) differs from the last one seen under ``name``, set the
    widgets' session values to ``values`` (before the widgets are drawn), so no control keeps a choice made for
    another image. Returns whether it reset."""
    marker = f"_last_{name}"
    if st.session_state.get(marker) == key:
        return False
    st.session_state[marker] = key
    for k, v in values.items():
        st.session_state[k] = v
    return True
