"""Every page runs under streamlit.testing.v1.AppTest, with one real interaction each."""
from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO, cell_image, make_class_folders

TIMEOUT = 120


@pytest.fixture
def app_env(tmp_path, monkeypatch, tiny_bundle):
    """A models dir holding the tiny bundle (and a second copy for comparison), a data root and a review dir."""
    models = tmp_path / "models"
    shutil.copytree(tiny_bundle, models / "tiny")
    shutil.copytree(tiny_bundle, models / "tiny2")
    import json

    card = json.loads((models / "tiny2" / "card.json").read_text())
    card["id"] = "tiny2"  # same split: a valid paired comparison
    from leukoview.models.bundle import finalize

    finalize(models / "tiny2", {k: v for k, v in card.items() if k not in ("files", "format")})
    data = tmp_path / "data"
    make_class_folders(data / "cells", {"normal": 0, "blast": 3}, 4, seed=11)
    monkeypatch.setenv("LEUKOVIEW_MODELS_DIR", str(models))
    monkeypatch.setenv("LEUKOVIEW_DATA_ROOT", str(data))
    monkeypatch.setenv("LEUKOVIEW_REVIEW_DIR", str(tmp_path / "reviews"))
    st.cache_data.clear()
    st.cache_resource.clear()
    yield tmp_path
    st.cache_data.clear()
    st.cache_resource.clear()


def run_page(path: str) -> AppTest:
    at = AppTest.from_file(str(REPO / "Home.py"), default_timeout=TIMEOUT).run()
    if path != "Home.py":
        at.switch_page(path).run()
    return at


def no_exceptions(at: AppTest):
    assert not at.exception, [e.value for e in at.exception]


def png_bytes(kind: int = 3, size: int = 96) -> bytes:
    buf = io.BytesIO()
    cell_image(kind, np.random.default_rng(0), size=size).save(buf, format="PNG")
    return buf.getvalue()


def test_home_lists_models_from_cards(app_env):
    at = run_page("Home.py")
    no_exceptions(at)
    table = next(m.value for m in at.markdown if m.value.startswith("| model |"))
    assert "| cells-cnn32 |" in table and "| tiny2 |" in table
    assert any("not a medical device" in w.value for w in at.warning)


def test_single_image_upload_shows_decision_and_gradcam(app_env):
    at = run_page("pages/1_Single_Image.py")
    no_exceptions(at)
    at.file_uploader(key="single_upload").set_value(("cell.png", png_bytes(size=64), "image/png"))
    at.run()
    no_exceptions(at)
    assert len(at.image) >= 1  # input and Grad-CAM overlay (the image list may group both)
    assert any("Faithfulness" in m.value for m in at.markdown)
    banners = [e.value for e in (*at.success, *at.warning, *at.error)]
    assert any(k in " ".join(banners) for k in ("LOW", "BORDERLINE", "HIGH"))


def test_a_flagged_image_gets_no_reassuring_verdict(app_env):
    from leukoview.primitives.pictures import not_cells

    buf = io.BytesIO()
    not_cells(4, seed=3)["photographs (crops)"][0].save(buf, format="PNG")
    at = run_page("pages/1_Single_Image.py")
    at.file_uploader(key="single_upload").set_value(("photo.png", buf.getvalue(), "image/png"))
    at.run()
    no_exceptions(at)
    assert not at.success  # no green box
    banners = " ".join(e.value for e in (*at.warning, *at.error))
    assert "not a blood-smear image" in banners.lower() and "LOW" not in banners and "HIGH" not in banners
    # a smear-coloured image the model has never seen the like of: flagged, so no verdict either
    noise = np.random.default_rng(0).normal((225, 190, 200), 40, (64, 64, 3)).clip(0, 255).astype(np.uint8)
    noise[20:40, 20:40] = (110, 50, 170)
    buf = io.BytesIO()
    __import__("PIL.Image").Image.fromarray(noise).save(buf, format="PNG")
    at.file_uploader(key="single_upload").set_value(("odd.png", buf.getvalue(), "image/png")).run()
    no_exceptions(at)
    banners = " ".join(e.value for e in (*at.success, *at.warning, *at.error))
    assert not at.success and ("CANNOT ASSESS" in banners or "not a blood-smear" in banners.lower())


def test_single_image_refuses_a_non_image_with_a_message(app_env):
    at = run_page("pages/1_Single_Image.py")
    at.file_uploader(key="single_upload").set_value(("fake.png", b"not an image at all", "image/png"))
    at.run()
    no_exceptions(at)
    assert any("cannot be scored" in e.value for e in at.error)


def test_batch_scores_a_folder_and_sorts(app_env):
    at = run_page("pages/2_Batch_Review.py")
    no_exceptions(at)
    at.button(key="batch_score").click().run()
    no_exceptions(at)
    at.radio(key="batch_view").set_value("Table").run()
    df = at.dataframe[0].value
    assert len(df) == 8 and (np.diff(df["suspicion"].to_numpy()) <= 0).all()
    at.selectbox(key="batch_sort").set_value("suspicion ↑").run()
    df = at.dataframe[0].value
    assert (np.diff(df["suspicion"].to_numpy()) >= 0).all()
    at.slider(key="batch_range").set_value((0.5, 1.0)).run()
    assert (at.dataframe[0].value["suspicion"] >= 0.5).all()


def test_threshold_slider_changes_the_confusion_matrix(app_env):
    at = run_page("pages/3_Threshold_Explorer.py")
    no_exceptions(at)

    def sens_spec():
        return {m.label: m.value for m in at.metric}

    def confusion_counts():
        import json

        fig = json.loads(at.get("plotly_chart")[0].proto.spec)  # the first chart is the confusion matrix
        assert "Confusion matrix" in fig["layout"]["title"]["text"]
        return fig["data"][0]["text"]

    at.slider(key="te_threshold").set_value(0.0).run()
    low = sens_spec()
    assert low["Sensitivity"] == "1.000" and low["Specificity"] == "0.000"
    cm_low = confusion_counts()
    assert cm_low[1][1].startswith("0<br>")  # nothing cleared at threshold 0: no true negatives
    at.slider(key="te_threshold").set_value(1.0).run()
    high = sens_spec()
    assert high != low and confusion_counts() != cm_low
    no_exceptions(at)
    at.selectbox(key="te_preset").set_value("Youden's J").run()
    no_exceptions(at)


def test_comparison_shows_both_models_and_mcnemar(app_env):
    at = run_page("pages/4_Model_Comparison.py")
    no_exceptions(at)
    table = at.dataframe[0].value
    assert set(table["model"]) == {"cells-cnn32", "tiny2"}
    at.selectbox(key="cmp_b_folder:cells").set_value("tiny2").run()
    assert any("McNemar p" in m.value for m in at.markdown)


PAGES = ("Home.py", "pages/1_Single_Image.py", "pages/2_Batch_Review.py", "pages/3_Threshold_Explorer.py",
         "pages/4_Model_Comparison.py")


def test_pages_say_what_to_do_without_models(tmp_path, monkeypatch):
    monkeypatch.setenv("LEUKOVIEW_MODELS_DIR", str(tmp_path / "empty"))
    st.cache_data.clear()
    for page in PAGES:
        at = run_page(page)
        no_exceptions(at)
        said = " ".join(m.value for m in [*at.info, *at.warning])
        assert "python -m leukoview train" in said and "LEUKOVIEW_MODELS_DIR" in said, page


def test_pages_with_nothing_chosen_say_what_to_do(app_env):
    expected = {"pages/1_Single_Image.py": "Upload, paste or photograph an image",
                "pages/2_Batch_Review.py": "press Score"}
    for page, text in expected.items():
        at = run_page(page)
        no_exceptions(at)
        assert any(text in m.value for m in at.info), page


def test_pages_only_compose_widgets():
    """Pages must not import torch, sklearn or grad-cam: computation lives in leukoview/."""
    import ast

    for page in [REPO / "Home.py", *sorted((REPO / "pages").glob("*.py"))]:
        tree = ast.parse(page.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not names & {"torch", "torchvision", "sklearn", "pytorch_grad_cam", "cv2"}, page.name


def test_shortcut_audit_is_shown_on_home_and_comparison(app_env):
    import json

    from leukoview.audits import shortcuts

    models = app_env / "models"
    task = json.loads((models / "tiny" / "card.json").read_text())["task"]
    groups = {g: {"classifier": "logistic regression", "accuracy": 0.9, "balanced_accuracy": 0.9,
                  "positive_roc_auc": 0.95} for g in [*shortcuts.CUE_GROUPS, "all cues"]}
    shortcuts.write(models / "tiny", {"task": task, "level": "high", "groups": groups,
                                      "message": "cues alone reach 0.900 HIGH"})
    at = run_page("Home.py")
    no_exceptions(at)
    assert any("Shortcut audit" in w.value and "0.900" in w.value for w in at.warning)
    at = run_page("pages/4_Model_Comparison.py")
    no_exceptions(at)
    assert any("Shortcut audit" in w.value for w in at.warning)


def test_batch_draws_no_patient_chart_under_a_model_whose_task_does_not_fit(app_env):
    rng = np.random.default_rng(2)
    folder = app_env / "data" / "patients"
    folder.mkdir(parents=True)
    for p in range(3):
        cell_image(0, rng).save(folder / f"UID_H{p}_1_1_hem.png")  # healthy patients' cells
    at = run_page("pages/2_Batch_Review.py")
    options = at.selectbox(key="batch_folder").options
    at.selectbox(key="batch_folder").set_value(next(i for i, o in enumerate(options) if "patients" in o)).run()
    at.button(key="batch_score").click().run()
    no_exceptions(at)
    assert any("none is drawn" in m.value for m in at.info)
    assert not any("Per patient" in h.value for h in at.subheader)


def test_model_choice_is_kept_in_the_url(app_env):
    at = AppTest.from_file(str(REPO / "Home.py"), default_timeout=TIMEOUT)
    at.query_params["model"] = "tiny2"
    at.run()
    no_exceptions(at)
    assert at.selectbox(key="model_picker").value == "tiny2"
    at.selectbox(key="model_picker").set_value("cells-cnn32").run()
    assert at.query_params["model"] == ["cells-cnn32"] or at.query_params["model"] == "cells-cnn32"


def test_comparison_table_puts_key_metrics_first(app_env):
    at = run_page("pages/4_Model_Comparison.py")
    cols = list(at.dataframe[0].value.columns)
    assert cols[:8] == ["model", "recommended", "accuracy", "balanced accuracy", "ROC-AUC", "sensitivity",
                        "specificity", "ECE"]


def test_opacity_moves_reuse_the_map_and_a_method_change_skips_the_network(app_env, monkeypatch):
    from leukoview.jobs import explain

    passes, maps = [], []
    real_prepare, real_from = explain.prepare, explain.cam_from
    monkeypatch.setattr(explain, "prepare", lambda *a, **k: passes.append(k.get("target")) or real_prepare(*a, **k))
    monkeypatch.setattr(explain, "cam_from", lambda inputs, method: maps.append(method) or real_from(inputs, method))
    at = run_page("pages/1_Single_Image.py")
    at.file_uploader(key="single_upload").set_value(("cell.png", png_bytes(size=64), "image/png")).run()
    # one network pass; every method's map made from it at once (the method menu is one click away)
    assert len(passes) == 1 and sorted(maps) == sorted(explain.METHODS)
    for v in (0.2, 0.8):
        at.slider(key="cam_opacity").set_value(v).run()
    at.selectbox(key="cam_method").set_value("Grad-CAM++").run()
    no_exceptions(at)
    assert len(passes) == 1 and len(maps) == len(explain.METHODS)  # nothing recomputed: blends and cache lookups
    assert at.image[-1].proto.imgs[0].caption.startswith("Grad-CAM++ for class")  # the cached map is shown
    other = next(c for c in at.selectbox(key="cam_target").options if c != at.selectbox(key="cam_target").value)
    at.selectbox(key="cam_target").set_value(other).run()
    no_exceptions(at)
    assert passes[-1] == other and len(passes) == 2  # another class's gradients need the network again


def _gallery(app_env, reviewer="Dr G"):
    at = run_page("pages/2_Batch_Review.py")
    at.sidebar.text_input(key="reviewer_input").input(reviewer).run()
    at.button(key="batch_score").click().run()
    no_exceptions(at)
    return at


def _panel_line(at) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("**Cell "))


def test_gallery_opens_a_cell_and_the_review_buttons_save_and_move(app_env):
    from leukoview.app.review import ReviewStore

    at = _gallery(app_env)
    assert _panel_line(at).startswith("**Cell 1 of 8**")
    opens = [b for b in at.button if b.key and b.key.startswith("open::")]
    assert len(opens) == 8  # one per cell, grouped by predicted class
    at.button(key="open::3").click().run()
    assert _panel_line(at).startswith("**Cell 4 of 8**")
    opened = _panel_line(at).split("`")[1]
    at.button(key="rv_confirm").click().run()
    no_exceptions(at)
    assert _panel_line(at).startswith("**Cell 5 of 8**")
    assert any(opened in s.value and s.value.startswith("Saved:") for s in at.success)
    second = _panel_line(at).split("`")[1]
    other = "normal" if "predicted **blast**" in _panel_line(at) else "blast"  # reclassified away from the model
    box = at.selectbox(key="rv_class")
    box.set_value(next(i for i, o in enumerate(box.options) if o.endswith(other))).run()
    at.button(key="rv_reclass").click().run()
    at.button(key="rv_unid").click().run()
    at.button(key="rv_prev").click().run()
    assert _panel_line(at).startswith("**Cell 6 of 8**")
    latest = ReviewStore(app_env / "reviews" / "decisions.sqlite").latest(
        f"{(app_env / 'data').resolve()}::.").set_index("file")
    assert latest.loc[opened, "action"] == "confirm"
    assert latest.loc[second, "action"] == "override" and latest.loc[second, "label"] == other
    assert (latest["label"] == "unidentified").sum() == 1 and len(latest) == 3
    assert "reviewed 3 of 8" in next(m.value for m in at.markdown if m.value.startswith("**Differential**"))


def test_the_gallery_page_follows_the_open_cell_when_a_key_moves_it(app_env, monkeypatch):
    from leukoview.app import gallery

    monkeypatch.setattr(gallery, "PER_PAGE", 3)  # 8 cells: three gallery pages
    at = _gallery(app_env)
    at.number_input(key="gallery_page").set_value(3).run()  # browsing the last page; cell 1 is open
    at.button(key="rv_next").click().run()
    assert _panel_line(at).startswith("**Cell 2 of 8**") and at.number_input(key="gallery_page").value == 1
    at.button(key="rv_confirm").click().run()
    at.button(key="rv_next").click().run()
    assert _panel_line(at).startswith("**Cell 4 of 8**") and at.number_input(key="gallery_page").value == 2
    assert at.button(key="open::3").proto.type == "primary"  # the open cell is highlighted on the page shown


def test_review_keys_need_a_reviewer_name(app_env):
    at = _gallery(app_env, reviewer="")
    at.button(key="rv_confirm").click().run()
    assert any("Enter your name" in e.value for e in at.error)
    assert _panel_line(at).startswith("**Cell 1 of 8**")  # nothing saved, nothing skipped


def test_sign_off_needs_the_box_ticked_then_is_shown_and_in_the_report(app_env):
    at = _gallery(app_env)
    at.button(key="rv_confirm").click().run()
    at.button(key="FormSubmitter:signoff-Sign off this folder").click().run()
    assert any("Tick the box" in e.value for e in at.error)
    at.checkbox(key="signoff_agree").check()  # a form's widgets travel with its submit
    at.button(key="FormSubmitter:signoff-Sign off this folder").click().run()
    no_exceptions(at)
    assert any("Signed off by **Dr G**" in s.value and "1 of 8 cells reviewed" in s.value for s in at.success)
    from leukoview.app.review import ReviewStore

    signed = ReviewStore(app_env / "reviews" / "decisions.sqlite").sign_offs(f"{(app_env / 'data').resolve()}::.")
    diff = {r["type"]: r for r in json.loads(signed["differential"].iloc[0])}
    assert diff["not yet reviewed"]["reviewed"] == 7 and signed["threshold"].iloc[0] > 0


def test_report_and_export_are_made_when_pressed_from_what_the_store_holds_then(app_env):
    """The downloads are made at the click (not on every review key): a decision saved after the buttons were drawn
    is in both."""
    import pandas as pd

    from leukoview.app import ui_signoff
    from leukoview.app.review import ReviewStore

    at = _gallery(app_env)
    sb = at.session_state["batch_result"]
    store = ReviewStore(app_env / "reviews" / "decisions.sqlite")
    report, export = ui_signoff.report_bytes(sb, sb.cells(), store, "blast"), ui_signoff.export_bytes(sb, store)
    assert "no reviewed classed cells yet" in report().decode()
    at.button(key="rv_confirm").click().run()
    assert "8 cells in the folder; 7 not reviewed" in report().decode()
    csv = pd.read_csv(io.BytesIO(export()), keep_default_na=False)
    assert len(csv) == 8 and (csv["review_action"] == "confirm").sum() == 1


def test_decisions_exported_on_one_server_import_on_another_under_the_importer_and_never_overwrite(app_env):
    """Decide three cells, export the CSV, then import it into an empty store (another server) on the page: the
    three decisions arrive under the signed-in importer, their comments name the file and the decider it names; a
    second import skips them all; a cell decided here first is not overwritten."""
    import pandas as pd

    from leukoview.app import decisions_import, ui_signoff
    from leukoview.app.review import ReviewStore

    at = _gallery(app_env, reviewer="Dr Away")
    for key in ("rv_confirm", "rv_unid", "rv_second"):
        at.button(key=key).click().run()
    sb = at.session_state["batch_result"]
    away = ReviewStore(app_env / "reviews" / "decisions.sqlite")
    exported = ui_signoff.export_bytes(sb, away)()
    decided = away.latest(sb.batch).set_index("file")
    away.path.rename(app_env / "reviews" / "away.sqlite")  # this server's store starts empty

    here = _gallery(app_env, reviewer="Dr Home")
    here.button(key="rv_confirm").click().run()  # Dr Home decides the first cell before the import
    first = ReviewStore(app_env / "reviews" / "decisions.sqlite").latest(sb.batch)["file"].tolist()
    here.file_uploader(key="decisions_csv").set_value(("away.csv", exported, "text/csv"))
    here.run()
    here.button(key="decisions_import").click().run()
    no_exceptions(here)
    assert any("Imported 2 decision(s) from away.csv; 1 row(s) skipped" in m.value for m in here.success)
    latest = ReviewStore(app_env / "reviews" / "decisions.sqlite").latest(sb.batch).set_index("file")
    assert len(latest) == 3 and set(latest["reviewer"]) == {"Dr Home"}
    assert latest.loc[first[0], "comment"] == ""  # Dr Home's own decision, not overwritten
    for f in set(latest.index) - set(first):
        assert latest.loc[f, ["action", "label"]].tolist() == decided.loc[f, ["action", "label"]].tolist()
        assert "imported from away.csv" in latest.loc[f, "comment"] and "Dr Away" in latest.loc[f, "comment"]
    assert "reviewed 3 of 8" in next(m.value for m in here.markdown if m.value.startswith("**Differential**"))
    again = decisions_import.plan(exported, sb, reviewer="Dr Home", source="away.csv", decided=set(latest.index))
    assert not again.decisions and len(again.skipped) == 3
    other = pd.read_csv(io.BytesIO(exported), keep_default_na=False).assign(model="another-model")
    with pytest.raises(decisions_import.DecisionsCSVError, match="another-model"):
        decisions_import.plan(other.to_csv(index=False).encode(), sb, reviewer="Dr Home", source="x", decided=set())


def test_batch_folder_is_kept_in_the_url(app_env):
    at = AppTest.from_file(str(REPO / "pages" / "2_Batch_Review.py"), default_timeout=TIMEOUT)
    at.query_params["folder"] = "0:cells/blast"
    at.run()
    no_exceptions(at)
    box = at.selectbox(key="batch_folder")
    assert box.options[box.value].startswith("data/cells/blast")
    at.selectbox(key="batch_folder").set_value(0).run()
    assert at.query_params["folder"] in (["0:."], "0:.")


def test_a_sign_off_records_the_model_that_scored_the_batch_not_the_one_chosen_after(app_env):
    """Score with one model, switch the sidebar to another (another threshold and id), then decide and sign off:
    the decision, the sign-off and the export name the model that scored the batch."""
    from leukoview.app.review import ReviewStore
    from leukoview.models.bundle import finalize, load_bundle

    models = app_env / "models"
    raw = load_bundle(models / "tiny2").card.raw
    finalize(models / "tiny2", {**{k: v for k, v in raw.items() if k not in ("files", "format", "card_sha256")},
                                "threshold": 0.123})
    st.cache_data.clear()
    tiny = load_bundle(models / "tiny")
    at = run_page("pages/2_Batch_Review.py")
    at.sidebar.selectbox(key="model_picker").set_value(tiny.id).run()
    at.sidebar.text_input(key="reviewer_input").input("Dr S").run()
    at.button(key="batch_score").click().run()
    at.sidebar.selectbox(key="model_picker").set_value("tiny2").run()  # the switch, after scoring
    no_exceptions(at)
    assert any(f"These scores come from **{tiny.id}**" in w.value for w in at.warning)
    at.button(key="rv_confirm").click().run()
    at.checkbox(key="signoff_agree").check()
    at.button(key="FormSubmitter:signoff-Sign off this folder").click().run()
    no_exceptions(at)
    store = ReviewStore(app_env / "reviews" / "decisions.sqlite")
    batch_id = f"{(app_env / 'data').resolve()}::."
    signed = store.sign_offs(batch_id).iloc[-1]
    assert signed["model"] == tiny.id and signed["model_sha256"] == tiny.card.weights_sha256
    assert signed["threshold"] == pytest.approx(tiny.threshold) and signed["threshold"] != pytest.approx(0.123)
    assert set(store.latest(batch_id)["model"]) == {tiny.id}


def test_a_new_image_resets_method_target_and_tta_so_captions_match_the_verdict(app_env):
    """Issue: after one image with EigenCAM, another target and TTA, the next image's map explained the old
    target with the old method while the verdict was the new image's."""
    from leukoview.jobs.predict import Predictor
    from leukoview.primitives.images import load_image

    second = png_bytes(kind=3, size=64)
    at = run_page("pages/1_Single_Image.py")
    at.file_uploader(key="single_upload").set_value(("a.png", png_bytes(kind=0, size=64), "image/png"))
    at.run()
    first = at.selectbox(key="cam_target").value
    at.selectbox(key="cam_method").set_value("EigenCAM").run()
    at.selectbox(key="cam_target").set_value(next(c for c in at.selectbox(key="cam_target").options
                                                  if c != first)).run()
    at.checkbox(key="tta").check().run()
    assert any("views above threshold" in c.value for c in at.caption)  # the TTA read-out is shown
    at.file_uploader(key="single_upload").set_value(("b.png", second, "image/png"))
    at.run()
    no_exceptions(at)
    predicted = Predictor(app_env / "models" / "tiny").predict(load_image(second)).predicted
    assert at.selectbox(key="cam_method").value == "Grad-CAM"
    assert at.selectbox(key="cam_target").value == predicted  # the verdict's class, not the old choice
    assert at.checkbox(key="tta").value is False
    assert not any("views above threshold" in c.value for c in at.caption)  # no TTA chart without its box
    faith = next(m.value for m in at.markdown if m.value.startswith("**Faithfulness:**"))
    assert f"'{predicted}'" in faith or predicted in faith


def test_a_reload_keeps_the_scored_batch_and_the_reviewer_name(app_env):
    """Issue: a reload lost the scored batch (the reviewer scored again) and the reviewer's name."""
    at = _gallery(app_env, reviewer="Dr R")
    assert at.query_params["reviewer"] in ("Dr R", ["Dr R"])
    params = {k: (v[0] if isinstance(v, list) else v) for k, v in at.query_params.items()}
    again = AppTest.from_file(str(REPO / "pages" / "2_Batch_Review.py"), default_timeout=TIMEOUT)
    for k, v in params.items():
        again.query_params[k] = v
    again.run()  # a new session: nothing in its state, only the URL
    no_exceptions(again)
    assert again.sidebar.text_input(key="reviewer_input").value == "Dr R"
    assert _panel_line(again).startswith("**Cell 1 of 8**")  # the gallery, without pressing Score
    assert any("Scores restored" in c.value for c in again.caption)


def test_with_users_configured_nothing_shows_before_sign_in_and_only_a_supervisor_signs_off(app_env):
    from leukoview.app import users
    from leukoview.app.review import ReviewStore

    users.add("Ann", "reviewer", "reviewer password", path=app_env / "reviews" / "users.json")
    users.add("Sue", "supervisor", "supervisor password", path=app_env / "reviews" / "users.json")
    for page in ("Home.py", "pages/1_Single_Image.py", "pages/2_Batch_Review.py", "pages/3_Threshold_Explorer.py",
                 "pages/4_Model_Comparison.py"):
        at = AppTest.from_file(str(REPO / page), default_timeout=TIMEOUT).run()
        no_exceptions(at)
        assert at.text_input(key="sign_in_password") is not None
        assert not at.dataframe and not at.sidebar.selectbox  # no model list, no table, no data
        assert not any("| model |" in m.value for m in at.markdown)

    def signed_in(name, password):
        at = AppTest.from_file(str(REPO / "pages" / "2_Batch_Review.py"), default_timeout=TIMEOUT).run()
        at.text_input(key="sign_in_name").input(name)
        at.text_input(key="sign_in_password").input(password)
        at.button(key="FormSubmitter:sign_in-Sign in").click().run()
        no_exceptions(at)
        if not at.error:
            at.button(key="batch_score").click().run()
        return at

    at = signed_in("Ann", "wrong password!")
    assert any("unknown user or wrong password" in e.value for e in at.error) and not at.dataframe
    at = signed_in("Ann", "reviewer password")
    assert any("Signed in as **Ann** (reviewer)" in m.value for m in at.sidebar.markdown)
    at.button(key="rv_confirm").click().run()
    at.checkbox(key="signoff_agree").check()
    at.button(key="FormSubmitter:signoff-Sign off this folder").click().run()
    assert any("only a supervisor signs off" in e.value for e in at.error)
    batch = f"{(app_env / 'data').resolve()}::."
    store = ReviewStore(app_env / "reviews" / "decisions.sqlite")
    assert set(store.latest(batch)["reviewer"]) == {"Ann"} and store.sign_offs(batch).empty
    at = signed_in("Sue", "supervisor password")
    at.checkbox(key="signoff_agree").check()
    at.button(key="FormSubmitter:signoff-Sign off this folder").click().run()
    signed = store.sign_offs(batch)
    assert signed["reviewer"].tolist() == ["Sue"] and signed["mode"].tolist() == [users.LOCAL]
    assert store.verify()["ok"]


def test_a_key_on_a_cell_another_reviewer_decided_since_it_was_shown_is_a_conflict(app_env):
    """Two reviewers on one slide: B decides the cell A has open; A's key must not silently supersede B's
    decision (it is refused as a conflict, and A's panel then shows B's decision)."""
    a = _gallery(app_env, reviewer="Dr A")
    b = _gallery(app_env, reviewer="Dr B")
    assert _panel_line(a).startswith("**Cell 1 of 8**") and _panel_line(b).startswith("**Cell 1 of 8**")
    b.button(key="rv_confirm").click().run()
    a.button(key="rv_unid").click().run()
    assert any("Not saved" in e.value and "Dr B" in e.value for e in a.error)
    from leukoview.app.review import ReviewStore

    latest = ReviewStore(app_env / "reviews" / "decisions.sqlite").latest(f"{(app_env / 'data').resolve()}::.")
    assert latest["reviewer"].tolist() == ["Dr B"]  # A's key did not replace B's decision
    a.button(key="rv_unid").click().run()  # now A has seen it: a deliberate second opinion is recorded
    assert any(s.value.startswith("Saved:") for s in a.success)
