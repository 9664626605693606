"""Classical models: the stored-array decision functions equal scikit-learn's / XGBoost's, and a classical bundle
works end to end like a network's (same files, Predictor reproduces its stored predictions, clear refusals)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from leukoview.jobs import classical_train
from leukoview.models import classical
from tests.conftest import make_class_folders


def _blobs(n_classes: int, seed: int = 0, n: int = 40, d: int = 12):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, (n_classes, d))
    y = np.repeat(np.arange(n_classes), n)
    x = (centres[y] + rng.normal(0, 1.5, (len(y), d))).astype(np.float32)
    return x, y


@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("kind", ["lda", "ridge", "ridge_cv"])
def test_linear_decisions_match_scikit_learn(kind, n_classes):
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import RidgeClassifier, RidgeClassifierCV

    x, y = _blobs(n_classes)
    arrays, _, _ = classical_train.fit_model(kind, x, y, x[:10], y[:10])
    ref = {"lda": LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"), "ridge": RidgeClassifier(alpha=1.0),
           "ridge_cv": RidgeClassifierCV(alphas=np.logspace(-1, 5, 13))}[kind].fit(x, y)
    ours = classical.decision(kind, arrays, x, n_classes=n_classes)
    theirs = ref.decision_function(x)
    if n_classes == 2:
        np.testing.assert_allclose(ours[:, 1] - ours[:, 0], theirs, rtol=1e-4, atol=1e-4)
    else:
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    assert (ours.argmax(1) == ref.predict(x)).all()


@pytest.mark.parametrize("n_classes", [2, 3])
def test_rbf_svc_from_stored_support_vectors_matches_scikit_learn(n_classes):
    from sklearn.svm import SVC

    x, y = _blobs(n_classes, seed=1)
    arrays, details, _ = classical_train.fit_model("svc", x, y, x[:10], y[:10], sv_dtype=np.float32)
    ours = classical.decision("svc", arrays, x, n_classes=n_classes)
    assert details["distinct_support_vectors"] <= sum(details["support_vectors"])
    # as shipped (float16 support vectors) the decisions move by far less than they separate classes
    half, _, _ = classical_train.fit_model("svc", x, y, x[:10], y[:10])
    assert half["sv"].dtype == np.float16
    shipped = classical.decision("svc", half, x, n_classes=n_classes)
    assert np.abs(shipped - ours).max() < 0.01 * np.abs(ours).max()
    gamma = details["gamma"]
    for k in ([1] if n_classes == 2 else range(n_classes)):
        ref = SVC(kernel="rbf", C=10.0, gamma=gamma).fit(x, (y == k).astype(int))
        col = ours[:, 1] if n_classes == 2 else ours[:, k]
        np.testing.assert_allclose(col, ref.decision_function(x), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_xgboost_json_model_gives_the_fitted_margins(n_classes):
    xgb = pytest.importorskip("xgboost")
    x, y = _blobs(n_classes, seed=2)
    _, details, text = classical_train.fit_model("xgboost", x, y, x, y)
    ours = classical.decision("xgboost", {}, x, xgb_json=text, n_classes=n_classes)
    booster = xgb.Booster()
    booster.load_model(bytearray(text.encode()))
    probs = booster.predict(xgb.DMatrix(x))
    expected = probs if n_classes > 2 else np.stack([1 - probs, probs], 1)
    from leukoview.primitives.calibration import softmax

    np.testing.assert_allclose(softmax(ours), expected, atol=1e-5)
    assert details["rounds"] >= 1 and details["tree_nodes"] > 0


def test_pixel_histogram_features_are_fixed_length_and_bounded():
    from PIL import Image

    imgs = [Image.new("RGB", (50, 70), (200, 10, 10)), Image.new("RGB", (300, 300), (0, 0, 255))]
    f = classical.pixels_hist(imgs)
    assert f.shape == (2, 3168) and f.dtype == np.float32
    assert 0 <= f.min() and f.max() <= 1
    np.testing.assert_allclose(f[:, 3072:].reshape(2, 6, 16).sum(2), 1.0, atol=1e-6)  # each histogram sums to 1


def test_unknown_model_and_feature_set_are_refused():
    x, y = _blobs(2)
    with pytest.raises(ValueError, match="known"):
        classical_train.fit_model("knn", x, y, x, y)
    with pytest.raises(ValueError, match="known"):
        classical.features([], "sift")


@pytest.fixture(scope="module")
def ridge_bundle(tmp_path_factory):
    from leukoview.jobs.train import TrainConfig

    root = tmp_path_factory.mktemp("cdata")
    make_class_folders(root / "cells", {"normal": 0, "blast": 3}, 20, seed=5)
    out = tmp_path_factory.mktemp("cmodels") / "ridge"
    cfg = TrainConfig(dataset="folder:cells", positive=["blast"], arch="ridge", data_root=str(root), out=str(out),
                      n_boot=50, ood_components=8)
    return classical_train.fit(cfg, progress=False), root


def test_classical_bundle_has_the_network_bundle_files_and_reproduces_its_predictions(ridge_bundle):
    from leukoview.jobs.predict import Predictor, score_files
    from leukoview.models.bundle import BundleError, load_bundle

    folder, root = ridge_bundle
    b = load_bundle(folder)
    assert b.card.kind == "classical" and not b.is_network and b.card.input["features"] == "pixels_hist"
    for name in ("model.safetensors", "metrics.json", "predictions.csv", "val_predictions.csv", "split.csv",
                 "ood.safetensors", "train_log.csv"):
        assert name in b.card.files
    with pytest.raises(BundleError, match="no network"):
        b.build_model()
    p = Predictor(b)
    assert p.backend == "classical" and not p.explainable
    stored = b.predictions()
    scored = score_files([root / f for f in stored["file"]], p, base=root)
    assert (scored["error"] == "").all()
    np.testing.assert_allclose(scored["suspicion"].to_numpy(), stored["suspicion"].to_numpy(), atol=1e-5)
    assert (scored["predicted"].to_numpy() == stored["predicted"].to_numpy()).all()
    assert np.isfinite(scored["ood_score"]).all()


def test_explain_refuses_a_classical_model_clearly(ridge_bundle):
    from PIL import Image

    from leukoview.jobs import explain
    from leukoview.jobs.predict import Predictor

    with pytest.raises(ValueError, match="classical model"):
        explain.explain(Predictor(ridge_bundle[0]), Image.new("RGB", (64, 64)))


def test_reevaluate_refuses_a_classical_bundle(ridge_bundle):
    from leukoview.jobs.train import reevaluate

    with pytest.raises(ValueError, match="classical"):
        reevaluate(ridge_bundle[0], progress=False)


def test_classical_bundle_joins_the_comparison_table(ridge_bundle, tiny_bundle):
    from leukoview.app import compare
    from leukoview.models.bundle import load_bundle

    table = compare.comparison_table([load_bundle(ridge_bundle[0]), load_bundle(tiny_bundle)])
    assert isinstance(table, pd.DataFrame) and len(table) == 2
    assert set(table["architecture"]) == {"ridge", "cnn32"}


def test_single_image_and_batch_pages_work_with_a_classical_model(ridge_bundle, tmp_path, monkeypatch):
    import shutil

    import streamlit as st

    from tests.test_app import no_exceptions, png_bytes, run_page

    models = tmp_path / "models"
    shutil.copytree(ridge_bundle[0], models / "ridge")
    monkeypatch.setenv("LEUKOVIEW_MODELS_DIR", str(models))
    monkeypatch.setenv("LEUKOVIEW_DATA_ROOT", str(ridge_bundle[1]))
    monkeypatch.setenv("LEUKOVIEW_REVIEW_DIR", str(tmp_path / "reviews"))
    st.cache_data.clear()
    st.cache_resource.clear()
    try:
        home = run_page("Home.py")
        no_exceptions(home)  # the model card of a classical model (features, not a normalisation)
        at = run_page("pages/1_Single_Image.py")
        at.file_uploader(key="single_upload").set_value(("cell.png", png_bytes(size=64), "image/png"))
        at.run()
        no_exceptions(at)
        assert any("no class-activation map" in i.value for i in at.info)
        banners = " ".join(e.value for e in (*at.success, *at.warning, *at.error))
        assert any(k in banners for k in ("LOW", "BORDERLINE", "HIGH"))
        at = run_page("pages/2_Batch_Review.py")
        at.button(key="batch_score").click().run()
        no_exceptions(at)
        assert len(at.dataframe) >= 1
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()


def test_a_classical_bundle_gets_a_wrong_task_detector(ridge_bundle, tmp_path):
    """The wrong-task detector fits on a classical model's own features (the ones its Mahalanobis check reads) and
    then flags held-out images of the other kind, which get "cannot assess"."""
    import shutil

    from leukoview.audits import wrongtask
    from leukoview.jobs.predict import Predictor, score_folder
    from tests.test_wrongtask import field_folders

    folder, root = ridge_bundle
    b = tmp_path / "ridge"
    shutil.copytree(folder, b)
    fit_dir, held = field_folders(tmp_path, np.random.default_rng(11))
    before = Predictor(b)
    assert before.wrong_task is None
    base_rate = score_folder(held, before)["ood_flag"].astype(bool).mean()
    info = wrongtask.fit(b, root, wrong=sorted(fit_dir.glob("*.png")), own=0, progress=False)
    assert info["wrong_task_images"] == 60
    p = Predictor(b)
    assert p.backend == "classical" and p.wrong_task is not None
    held_scores = score_folder(held, p)
    flagged = held_scores["ood_flag"].astype(bool)
    assert flagged.mean() >= max(0.9, base_rate)
    assert set(held_scores.loc[flagged, "decision"]) == {"cannot assess"}
