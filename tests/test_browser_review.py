"""The review keeps its promises, in a real browser (headless Debian chromium driven by Playwright)."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager

import numpy as np
import pytest

from bench.review_flow import ARGS, CHROMIUM, idle, open_folder, wait_for_keys
from tests.test_browser import _skip_reason, lab_dirs, start_server, stop_server

pytestmark = pytest.mark.browser


@pytest.fixture
def review_server(tmp_path, tiny_bundle):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    data, reviews, env = lab_dirs(tmp_path, tiny_bundle, "cells", 6, 9)
    env["LEUKOVIEW_CACHE_DIR"] = str(tmp_path / "cache")
    proc, port = start_server(env, tmp_path / "streamlit.log")
    yield port, reviews / "decisions.sqlite", f"{data.resolve()}::cells"
    stop_server(proc)


@contextmanager
def keyboard_review(port: int):
    """A Chromium page on the scored folder with keyboard review on, as reviewer Ann."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        try:
            open_folder(page, port, "0:cells", "Ann")
            page.get_by_text("Keyboard review").click()
            idle(page)
            wait_for_keys(page)
            yield page
        finally:
            browser.close()


def test_keys_typed_into_a_text_field_record_nothing_and_the_name_locks(review_server):
    from leukoview.app.review import ReviewStore

    port, store_path, batch = review_server
    with keyboard_review(port) as page:
        name = page.locator('input[aria-label="Reviewer name (recorded with decisions)"]')
        assert name.is_disabled()  # locked at once, though the toggle lives in a fragment
        comment = page.locator('input[aria-label="Sign-off comment (optional)"]')
        comment.click()
        page.keyboard.type("ie c 1 u s")  # review keys, typed as text
        page.keyboard.press("Enter")
        idle(page, settle=1500)
        assert len(ReviewStore(store_path).latest(batch)) == 0
        assert page.locator("text=/Cell 1 of/").count() >= 1  # the panel did not move on
        page.locator("h1").first.click()  # focus off the field: now a key is a decision
        page.keyboard.press("c")
        page.wait_for_function("s => document.body.innerText.includes(s)", arg="reviewed 1 of", timeout=30_000)
        latest = ReviewStore(store_path).latest(batch)
        assert len(latest) == 1 and latest["action"].iloc[0] == "confirm" and latest["reviewer"].iloc[0] == "Ann"


def test_each_key_decision_shows_on_the_thumbnails_and_in_the_sign_off_counts(review_server):
    """Issue: after keyboard decisions no thumbnail had its badge and the sign-off said 'reviewed 0'."""
    port, _, _ = review_server
    with keyboard_review(port) as page:
        page.locator("h1").first.click()
        for k in range(3):
            page.keyboard.press("c")
            page.wait_for_function("s => document.body.innerText.includes(s)", arg=f"reviewed {k + 1} of",
                                   timeout=30_000)
        idle(page, settle=800)
        text = page.locator('[data-testid="stMain"]').inner_text()
        assert "12 cells; reviewed 3," in text  # the sign-off section's count, below the gallery
        assert "9 cell(s) not reviewed" in text
        import re

        thumbs = page.locator('button[data-testid^="stBaseButton"]').filter(has_text=re.compile(r"^\d+%"),
                                                                         visible=True)
        assert thumbs.count() == 12
        assert thumbs.filter(has_text="✓").count() == 3  # one confirmed badge per decided thumbnail


def test_a_reload_keeps_the_scored_batch_and_the_reviewer_name_in_the_browser(review_server):
    """Issue: a reload lost the scored batch (the reviewer had to score again) and the reviewer name."""
    from playwright.sync_api import sync_playwright

    port, _, _ = review_server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        try:
            open_folder(page, port, "0:cells", "Ann")
            assert "reviewer=Ann" in page.url
            page.reload()  # a new Streamlit session: only the URL and the store remain
            page.wait_for_selector("text=/Cell 1 of 12/", timeout=60_000)  # the gallery, without pressing Score
            idle(page)
            assert page.locator("text=Scores restored").count() >= 1
            name = page.locator('input[aria-label="Reviewer name (recorded with decisions)"]')
            assert name.input_value() == "Ann"
        finally:
            browser.close()


def test_a_field_model_gives_no_verdict_on_a_single_cell_crop_in_the_browser(tmp_path, tiny_bundle):
    """Issue: a single white cell under the ALL field model got 'LOW - Routine review'."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    from tests.conftest import REPO
    from tests.test_cells import disks

    field_model = REPO / "models" / "all4-efficientnet_lite0-cells-fieldhead"
    if not (field_model / "model.safetensors").is_file():
        pytest.skip("the shipped ALL field model is not in models/")
    models = tmp_path / "models"
    shutil.copytree(field_model, models / field_model.name)
    disks([(48, 48)], 36, size=120).save(tmp_path / "one_cell.png")  # one violet cell filling the crop
    env = {**os.environ, "LEUKOVIEW_MODELS_DIR": str(models), "LEUKOVIEW_REVIEW_DIR": str(tmp_path / "rev")}
    proc, port = start_server(env, tmp_path / "streamlit.log")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(f"http://127.0.0.1:{port}/Single_Image")
            page.wait_for_selector('[data-testid="stAppViewContainer"] h1', timeout=90_000)
            idle(page)
            page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(
                str(tmp_path / "one_cell.png"))
            page.wait_for_selector("text=/single-cell image/", timeout=90_000)
            idle(page)
            text = page.locator('[data-testid="stMain"]').inner_text()
            assert "CANNOT ASSESS" in text.upper() and "LOW —" not in text and "HIGH —" not in text
            browser.close()
    finally:
        stop_server(proc)


def test_a_new_image_resets_the_map_controls_in_the_browser(review_server, tmp_path):
    """Issue: after EigenCAM and another target on one image, the next image's map and captions kept them."""
    from playwright.sync_api import sync_playwright

    from tests.conftest import cell_image

    rng = np.random.default_rng(0)
    cell_image(0, rng, size=64).save(tmp_path / "a.png")
    cell_image(3, rng, size=64).save(tmp_path / "b.png")
    port, _, _ = review_server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2200})
        try:
            page.goto(f"http://127.0.0.1:{port}/Single_Image")
            page.wait_for_selector('[data-testid="stAppViewContainer"] h1', timeout=90_000)
            idle(page)
            upload = page.locator('[data-testid="stFileUploaderDropzoneInput"]').first
            upload.set_input_files(str(tmp_path / "a.png"))
            page.wait_for_selector("text=/Faithfulness/", timeout=90_000)
            idle(page)
            page.locator('[data-testid="stSelectbox"]').filter(has_text="Method").click()
            option = page.get_by_role("option", name="EigenCAM", exact=True)
            option.wait_for()
            option.click()
            page.wait_for_selector("text=/EigenCAM for class/", timeout=60_000)
            idle(page)
            page.get_by_text("Test-time augmentation (8 flips and rotations)").click()
            page.wait_for_selector("text=/views above threshold/", timeout=60_000)
            upload.set_input_files(str(tmp_path / "b.png"))
            page.wait_for_selector("text=/Grad-CAM for class/", timeout=90_000)
            idle(page, settle=1000)
            text = page.locator('[data-testid="stMain"]').inner_text()
            assert "EigenCAM for class" not in text and "views above threshold" not in text
        finally:
            browser.close()


def test_the_gallery_turns_to_the_open_cells_page_when_a_key_moves_it(tmp_path, tiny_bundle):
    """Issue: browsing to another gallery page and then reviewing with keys left the gallery on that page, the open
    cell's highlight out of sight; the gallery now follows the key."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from leukoview.app.gallery import PER_PAGE

    _, _, env = lab_dirs(tmp_path, tiny_bundle, "cells", PER_PAGE // 2 + 3, 9)  # two gallery pages
    proc, port = start_server(env, tmp_path / "streamlit.log")
    try:
        with keyboard_review(port) as page:
            pages = page.locator('[data-testid="stNumberInput"] input').first
            pages.fill("2")
            page.keyboard.press("Enter")
            idle(page)
            assert pages.input_value() == "2" and page.locator(".st-key-open--1 button").count() == 0
            page.locator("h1").first.click()
            page.keyboard.press("ArrowRight")
            page.wait_for_selector("text=/Cell 2 of/", timeout=30_000)
            idle(page)
            assert pages.input_value() == "1"
            opened = page.locator(".st-key-open--1 button")  # the open cell's button, highlighted
            assert opened.count() and {b.get_attribute("data-testid") for b in opened.all()} == {"stBaseButton-primary"}
    finally:
        stop_server(proc)
