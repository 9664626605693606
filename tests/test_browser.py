"""Real browser: `streamlit run Home.py` headless, every page opened in headless Chromium (system binary driven
by Playwright), no exception box on any page, full-page screenshots saved."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.review_flow import ARGS, CHROMIUM
from bench.review_flow import start_server as bench_start_server
from tests.conftest import REPO

pytestmark = pytest.mark.browser


def _skip_reason() -> str | None:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        return "Debian chromium is not installed (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    return None


def start_server(env: dict, log_path: Path) -> tuple[subprocess.Popen, int]:
    """:func:`bench.review_flow.start_server` (the one launcher the benchmark and these tests share); a server that
    does not come up fails the test with its log."""
    try:
        return bench_start_server(env, log_path)
    except RuntimeError as e:
        pytest.fail(str(e))


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def lab_dirs(tmp_path: Path, tiny_bundle: Path, folder: str, per_class: int, seed: int) -> tuple[Path, Path, dict]:
    """A models dir with the tiny bundle, a data root with ``folder`` of synthetic cells and the server's env;
    returns (data, reviews, env)."""
    from tests.conftest import make_class_folders

    models, data, reviews = tmp_path / "models", tmp_path / "data", tmp_path / "reviews"
    shutil.copytree(tiny_bundle, models / "tiny")
    make_class_folders(data / folder, {"normal": 0, "blast": 3}, per_class, seed=seed)
    return data, reviews, {**os.environ, "LEUKOVIEW_MODELS_DIR": str(models), "LEUKOVIEW_REVIEW_DIR": str(reviews),
                           "LEUKOVIEW_DATA_ROOT": str(data)}


@pytest.fixture
def server(tmp_path, tiny_bundle):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    models = tmp_path / "models"
    if any((REPO / "models").glob("*/card.json")):
        shutil.copytree(REPO / "models", models)
    else:
        shutil.copytree(tiny_bundle, models / "tiny")
    env = {**os.environ, "LEUKOVIEW_MODELS_DIR": str(models), "LEUKOVIEW_REVIEW_DIR": str(tmp_path / "reviews")}
    proc, port = start_server(env, tmp_path / "streamlit.log")
    yield port
    stop_server(proc)


def wait_until_idle(page, timeout: float = 120) -> None:
    """Until Streamlit reports the script run finished (the app root's data-test-script-state), then a moment
    for canvases (dataframes) to paint."""
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout * 1000)
    page.wait_for_timeout(1500)


def test_every_page_renders_without_exception(server, tmp_path):
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("LEUKOVIEW_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    pages = [""] + [p.stem.split("_", 1)[1] for p in sorted((REPO / "pages").glob("*.py"))]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2600})
        for route in pages:
            page.goto(f"http://127.0.0.1:{server}/{route}")
            page.wait_for_selector('[data-testid="stAppViewContainer"] h1', timeout=90_000)
            wait_until_idle(page)
            page.screenshot(path=str(shots / f"{route or 'Home'}.png"), full_page=True)
            errors = page.locator('[data-testid="stException"]')
            assert errors.count() == 0, f"{route or 'Home'}: {errors.first.inner_text()[:300]}"
            body = page.locator('[data-testid="stApp"]').inner_text()
            assert "None" not in body.split(), f"{route or 'Home'}: a raw None is shown"
            if not route:  # Home says where to start; the picker marks the recommended model
                assert "Where to start with your own slides" in body and "★" in body
        browser.close()


def test_decisions_survive_kill_9_and_restart(tmp_path, tiny_bundle):
    """Save a decision in a real browser, kill -9 the server, restart it: the decision is there."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    from tests.conftest import make_class_folders

    models, data = tmp_path / "models", tmp_path / "data"
    shutil.copytree(tiny_bundle, models / "tiny")
    make_class_folders(data / "cells", {"normal": 0, "blast": 3}, 3, seed=5)
    env = {**os.environ, "LEUKOVIEW_MODELS_DIR": str(models), "LEUKOVIEW_REVIEW_DIR": str(tmp_path / "reviews"),
           "LEUKOVIEW_DATA_ROOT": str(data)}

    def open_first_row(page, port):
        page.goto(f"http://127.0.0.1:{port}/Batch_Review")
        page.wait_for_selector('[data-testid="stAppViewContainer"] h1', timeout=90_000)
        wait_until_idle(page)
        page.get_by_label("Reviewer name (recorded with decisions)").fill("Dr Kill")
        page.keyboard.press("Enter")
        wait_until_idle(page)
        page.get_by_role("button", name="Score with").click()
        page.wait_for_selector("text=/Cell 1 of/", timeout=90_000)
        wait_until_idle(page)
        page.get_by_text("Table", exact=True).click()  # the table view (the gallery is the default)
        page.wait_for_selector('[data-testid="stDataFrame"]', timeout=90_000)
        wait_until_idle(page)
        box = page.locator('[data-testid="stDataFrame"]').first.bounding_box()
        page.mouse.click(box["x"] + 12, box["y"] + 36 + 17)  # the first row's selection cell
        page.wait_for_selector("text=Save decision", timeout=90_000)
        wait_until_idle(page)

    proc, port = start_server(env, tmp_path / "first.log")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2000})
        try:
            open_first_row(page, port)
            page.get_by_label("Comment", exact=True).fill("survives kill -9")
            page.get_by_role("button", name="Save decision").click()
            page.wait_for_selector("text=Current decision", timeout=90_000)
        finally:
            proc.kill()  # SIGKILL: no shutdown hooks run
            proc.wait(10)
        proc, port = start_server(env, tmp_path / "second.log")
        try:
            open_first_row(page, port)
            info = page.locator("text=Current decision").first.inner_text()
            assert "Dr Kill" in info and "survives kill -9" in info
        finally:
            browser.close()
            stop_server(proc)


def test_review_flow_keyboard_sign_off_export_and_kill_9(tmp_path, tiny_bundle):
    """Gallery -> open -> 100 cells decided with the keyboard alone -> sign off -> report and CSV downloaded; every
    decision and the sign-off are in the store; after kill -9 and a restart the page shows the sign-off."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    import json

    import pandas as pd
    from playwright.sync_api import sync_playwright

    from bench.review_flow import drive, open_folder
    from leukoview.app.review import ReviewStore
    from leukoview.models.bundle import WEIGHTS
    from tests.conftest import make_class_folders

    models, data, reviews = tmp_path / "models", tmp_path / "data", tmp_path / "reviews"
    shutil.copytree(tiny_bundle, models / "tiny")
    make_class_folders(data / "cells", {"normal": 0, "blast": 3}, 55, seed=9)  # 110 cells: two gallery pages
    env = {**os.environ, "LEUKOVIEW_MODELS_DIR": str(models), "LEUKOVIEW_REVIEW_DIR": str(reviews),
           "LEUKOVIEW_DATA_ROOT": str(data)}
    shots = Path(os.environ.get("LEUKOVIEW_SCREENSHOTS", tmp_path / "screenshots")) / "review_flow"
    proc, port = start_server(env, tmp_path / "first.log")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800}, accept_downloads=True)
        try:
            t = drive(page, port, folder_id="0:cells", reviewer="Dr Keys", keys=100, shots=shots)
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            proc.kill()  # SIGKILL straight after the sign-off: no shutdown hooks run
            proc.wait(10)
        store = ReviewStore(reviews / "decisions.sqlite")
        batch = f"{data.resolve()}::cells"
        latest = store.latest(batch)
        assert t["decisions"] == 100 and len(latest) == 100 and set(latest["reviewer"]) == {"Dr Keys"}
        assert {"confirm", "override", "second_review"} <= set(latest["action"])
        assert "unidentified" in set(latest["label"])
        signed = store.sign_offs(batch)
        assert len(signed) == 1 and signed["reviewer"].iloc[0] == "Dr Keys" and signed["reviewed"].iloc[0] == 100
        assert signed["model_sha256"].iloc[0] == json.loads((models / "tiny" / "card.json").read_text())["files"][
            WEIGHTS]
        report = Path(t["report"]).read_text()
        assert "Signed off by <b>Dr Keys</b>" in report and "DRAFT" not in report
        # the review issue's report lines, in the file the browser downloaded
        assert "not a medical device" in report and "cells in the model&#x27;s training data" in report
        assert "reviewed classed cells (of 110 cells in the folder; 10 not reviewed)" in report
        assert "audit trail head" in report and "signer identified" in report
        csv = pd.read_csv(t["csv"], keep_default_na=False)
        assert len(csv) == 110 and (csv["review_action"] != "").sum() == 100
        card = json.loads((models / "tiny" / "card.json").read_text())
        assert set(csv["folder"]) == {str((data / "cells").resolve())} and set(csv["model"]) == {card["id"]}
        proc, port = start_server(env, tmp_path / "second.log")
        try:  # the URL brings the folder back; scoring it again shows the stored sign-off
            open_folder(page, port, "0:cells", "Dr Keys")
            # the sign-off is stored under the batch of the folder `cells`, so seeing it proves the URL chose it
            assert "Dr Keys" in page.locator("text=Signed off by").first.inner_text()
        finally:
            browser.close()
            stop_server(proc)


def test_with_users_configured_a_signed_out_browser_sees_no_data_on_any_page(tmp_path, tiny_bundle):
    """The sign-in issue's check in a real browser: with a users file, every page shows the sign-in form and
    nothing else (no model list, table, image, chart or metric, no folder or model name); a wrong password is
    refused; the right one opens the batch page under that user; no password reaches the server's log."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    import json

    from playwright.sync_api import sync_playwright

    from bench.review_flow import IDLE
    from leukoview.app import users

    _, reviews, env = lab_dirs(tmp_path, tiny_bundle, "secretfolder", 3, 4)
    users.add("Ann", "reviewer", "ann's long password", path=reviews / "users.json")
    model_id = json.loads((tiny_bundle / "card.json").read_text())["id"]
    data_tags = ["stDataFrame", "stImage", "stPlotlyChart", "stMetric", "stSelectbox", "stFileUploader", "stTable",
                 "stVegaLiteChart"]
    proc, port = start_server(env, tmp_path / "streamlit.log")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        try:
            for path in ("", "Single_Image", "Batch_Review", "Threshold_Explorer", "Model_Comparison"):
                page.goto(f"http://127.0.0.1:{port}/{path}")
                page.wait_for_selector('input[type="password"]', timeout=90_000)
                page.wait_for_selector(IDLE, timeout=60_000)
                for tag in data_tags:
                    assert page.locator(f'[data-testid="{tag}"]').count() == 0, (path, tag)
                text = page.locator("body").inner_text()
                assert "secretfolder" not in text and model_id not in text, path
            name, password = page.get_by_label("User name"), page.locator('input[type="password"]')
            name.fill("Ann")
            password.fill("not ann's password")
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_selector("text=unknown user or wrong password", timeout=30_000)
            assert page.locator('[data-testid="stSelectbox"]').count() == 0
            password.fill("ann's long password")
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_selector("text=Signed in as", timeout=60_000)
            page.wait_for_selector(IDLE, timeout=60_000)
            assert "Ann" in page.locator('[data-testid="stSidebar"]').inner_text()
            assert model_id in page.locator('[data-testid="stSidebar"]').inner_text()  # the model choice
            page.get_by_role("link", name="Batch Review").click()  # the same session, another page
            page.wait_for_selector("text=Folder (scored recursively)", timeout=60_000)  # signed in still
            page.wait_for_selector(IDLE, timeout=60_000)
            page.screenshot(path=str(tmp_path / "signed_in.png"))
            assert page.get_by_role("button", name="Score with").count() == 1
        finally:
            browser.close()
            stop_server(proc)
    log = (tmp_path / "streamlit.log").read_text()
    assert "ann's long password" not in log and "not ann's password" not in log
    assert "ann's long password" not in (reviews / "users.json").read_text()
