"""The batch page's cell-review flow in a real browser (headless Debian chromium driven by Playwright): open a folder
from the URL, score it, look at the gallery, review cells with the keyboard alone, sign off, download the report and
the CSV. ``drive`` is shared by the browser test (which checks what was saved) and this benchmark (which prints how
long each step took).

    python -m bench.review_flow [--bundle models/<the recommended wbc9 model>] [--folder wbc5/test/myeloblast]
        [--keys 100] [--shots bench/review_shots]

Figures: gallery render (Score pressed -> the first page of thumbnails painted), per-keystroke latency (key down ->
the panel shows the decision saved and the next cell), the sign-off and the downloads; then, on the single-image
page with the folder's first image, an opacity step and a CAM method change (action -> the overlay changed)."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from leukoview.primitives.tasks import recommended_for

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
KEYS = ["c", "2", "u", "1", "Enter", "s", "c", "ArrowRight", "ArrowLeft", "c"]  # moves included; see drive()
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict, log_path: Path, *, timeout: float = 90) -> tuple[subprocess.Popen, int]:
    """``streamlit run Home.py`` headless on a free port; returns once it answers its health check."""
    port = free_port()
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "Home.py", "--server.headless", "true",
                             "--server.port", str(port), "--browser.gatherUsageStats", "false"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"streamlit did not start: {log_path.read_text()[-2000:]}")


def idle(page, timeout: float = 120, settle: int = 300) -> None:
    page.wait_for_selector(IDLE, timeout=timeout * 1000)
    page.wait_for_timeout(settle)


def wait_for_keys(page, timeout: float = 30) -> None:
    """Until the hotkeys component's frame has loaded (it listens for keys from its load event on)."""
    page.wait_for_selector('iframe[src*="ui_keys"]', state="attached", timeout=timeout * 1000)
    deadline = time.time() + timeout
    while time.time() < deadline:
        frame = next((f for f in page.frames if "ui_keys" in f.url), None)
        if frame is not None and frame.evaluate("document.readyState") == "complete":
            page.wait_for_timeout(300)
            return
        page.wait_for_timeout(100)
    raise TimeoutError("the keyboard component did not load")


def open_folder(page, port: int, folder_id: str, reviewer: str, *, rescore: bool = True) -> None:
    """The batch page with ``?folder=`` in the URL, the reviewer's name entered, the folder scored (or, with
    ``rescore=False``, its kept scores restored when the page offers them)."""
    page.goto(f"http://127.0.0.1:{port}/Batch_Review?folder={folder_id}")
    page.wait_for_selector('[data-testid="stAppViewContainer"] h1', timeout=90_000)
    idle(page)
    name = page.get_by_label("Reviewer name (recorded with decisions)")
    if name.input_value() != reviewer:
        name.fill(reviewer)
        page.keyboard.press("Enter")
        idle(page)
    if rescore or page.get_by_text("Scores restored").count() == 0:
        page.get_by_role("button", name="Score with").click()
    page.wait_for_selector("text=/Cell 1 of/", timeout=300_000)
    idle(page)


def drive(page, port: int, *, folder_id: str, reviewer: str, keys: int, shots: Path) -> dict:
    """The whole flow; returns timings (seconds) and what was downloaded."""
    shots.mkdir(parents=True, exist_ok=True)
    out: dict = {}
    t0 = time.perf_counter()
    open_folder(page, port, folder_id, reviewer)
    out["score_and_gallery_s"] = time.perf_counter() - t0
    n = int(page.locator("text=/Cell 1 of \\d+/").first.inner_text().split(" of ")[1].split()[0])
    page.screenshot(path=str(shots / "1_gallery.png"), full_page=True)
    # a gallery page painted again on its own (the second page when there is one, else the first)
    from leukoview.app.gallery import PER_PAGE

    if n > PER_PAGE:  # the second page of thumbnails, drawn in place of the first: until its images are all there
        before = page.evaluate(IMAGES_JS)
        t0 = time.perf_counter()
        page.locator('[data-testid="stNumberInput"] input').first.fill("2")
        page.keyboard.press("Enter")
        page.wait_for_function(f"(old) => ({IMAGES_JS})() !== old && ({IMAGES_JS})().split('|').length >= "
                               f"{min(PER_PAGE, n - PER_PAGE)} && ({LOADED_JS})()", arg=before, timeout=60_000)
        out["gallery_page_s"] = time.perf_counter() - t0
        idle(page)
    for attempt in range(3):  # a click that lands while the page is still drawing can be lost: check, retry
        page.get_by_text("Keyboard review").click()
        idle(page)
        try:
            wait_for_keys(page, timeout=20)
            break
        except Exception:  # playwright's TimeoutError, or ours
            if attempt == 2:
                raise
            idle(page, settle=1000)
    page.locator("h1").first.click()  # focus off the toggle: keys go to the page
    keys = min(keys, n)
    latencies, recorded, pos, k = [], 0, 0, 0
    while recorded < keys:  # `keys` decisions, each on a cell not decided before; moves in between
        key = KEYS[k % len(KEYS)]
        k += 1
        moves = key in ("ArrowRight", "ArrowLeft")
        if moves and pos >= n - 2:
            continue
        after = max(0, pos - 1) if key == "ArrowLeft" else min(n - 1, pos + 1)
        t = time.perf_counter()
        page.keyboard.press(key)
        if after != pos:
            page.wait_for_selector(f"text=/Cell {after + 1} of {n}\\b/", timeout=30_000)
        if not moves:
            page.wait_for_function("s => document.body.innerText.includes(s)",
                                   arg=f"reviewed {recorded + 1} of {n}", timeout=30_000)
            recorded += 1
        latencies.append(time.perf_counter() - t)
        pos = after
        page.wait_for_selector(IDLE, timeout=30_000)
    out["keys"], out["decisions"] = len(latencies), recorded
    out["key_latency_s"] = latencies
    page.screenshot(path=str(shots / "2_reviewed.png"), full_page=True)
    page.get_by_text("Keyboard review").click()  # off: the sign-off form has a text field
    idle(page)
    page.get_by_text("Sign off with").or_(page.get_by_text("I have reviewed every cell")).first.click()
    t0 = time.perf_counter()
    page.get_by_role("button", name="Sign off this folder").click()
    page.wait_for_selector("text=Signed off by", timeout=60_000)
    out["sign_off_s"] = time.perf_counter() - t0
    idle(page)
    page.screenshot(path=str(shots / "3_signed_off.png"), full_page=True)
    for key, name in (("report", "Download the report"), ("csv", "Download scores and decisions")):
        with page.expect_download() as dl:
            page.get_by_role("button", name=name).click()
        path = shots / dl.value.suggested_filename
        dl.value.save_as(str(path))
        out[key] = str(path)
    return out


IMAGES_JS = "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')].map(i => i.src).join('|')"
LOADED_JS = "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')].every(i => i.complete)"


def cam_controls(page, port: int, image: Path, *, moves: int = 8) -> dict:
    """The single-image page's Grad-CAM controls (a fragment with the map cached): seconds from an opacity step
    (slider key press) and from choosing another CAM method in the opened list to the overlay image having changed in
    the page, for each method once (the last one, Grad-CAM, shown before: its map is cached)."""
    page.goto(f"http://127.0.0.1:{port}/Single_Image")
    page.wait_for_selector('[data-testid="stAppViewContainer"] h1', timeout=90_000)
    idle(page)
    page.locator('input[type="file"]').first.set_input_files(str(image))
    page.wait_for_selector("text=Overlay opacity", timeout=120_000)
    idle(page, settle=1000)

    def timed(action) -> float:
        before = page.evaluate(IMAGES_JS)
        t = time.perf_counter()
        action()
        page.wait_for_function(f"(old) => ({IMAGES_JS})() !== old && ({IMAGES_JS})().length > 0", arg=before,
                               timeout=60_000)
        dt = time.perf_counter() - t
        page.wait_for_selector(IDLE, timeout=60_000)
        return dt

    slider = page.get_by_role("slider").last
    opacity = []
    for _ in range(moves):
        slider.focus()
        opacity.append(timed(lambda: page.keyboard.press("ArrowLeft")))
    methods = []
    for name in ("Grad-CAM++", "EigenCAM", "XGrad-CAM", "LayerCAM", "Grad-CAM"):
        # the list opened first, untimed (the reviewer's own click); timed: choosing the method -> new overlay
        page.locator('[data-testid="stSelectbox"]').filter(has_text="Method").click()
        option = page.get_by_role("option", name=name, exact=True)
        option.wait_for()
        methods.append(timed(option.click))
    return {"opacity_s": opacity, "method_s": methods}


def summary(t: dict) -> str:
    import numpy as np

    from leukoview.app.gallery import PER_PAGE

    lat = np.asarray(t["key_latency_s"]) * 1000
    return "\n".join([
        f"score + first gallery page: {t['score_and_gallery_s']:.2f} s",
        *([f"second gallery page (up to {PER_PAGE} thumbnails) drawn and loaded: {t['gallery_page_s']:.2f} s"]
          if "gallery_page_s" in t else []),
        f"{t['keys']} review keys ({t['decisions']} cells decided, the rest moves): latency median "
        f"{np.median(lat):.0f} ms, p95 {np.quantile(lat, 0.95):.0f} ms, "
        f"max {lat.max():.0f} ms; {int((lat <= 300).sum())} of {len(lat)} within 300 ms",
        f"sign-off: {t['sign_off_s']:.2f} s; report {Path(t['report']).name}, CSV {Path(t['csv']).name}",
        *([f"single image: opacity step median {1000 * np.median(t['cam']['opacity_s']):.0f} ms (max "
           f"{1000 * max(t['cam']['opacity_s']):.0f}), CAM method change "
           + ", ".join(f"{1000 * v:.0f}" for v in t['cam']['method_s']) + " ms"] if "cam" in t else [])])


@contextmanager
def served(bundle: Path, root: Path, tmp: Path):
    """The app on ``bundle`` alone (copied into ``tmp``) over the data root ``root``, with a fresh review store, and
    a headless chromium page: yields (server process, port, page); stops both afterwards."""
    from playwright.sync_api import sync_playwright

    models = tmp / "models"
    shutil.copytree(bundle, models / bundle.name)
    env = {**os.environ, "LEUKOVIEW_MODELS_DIR": str(models), "LEUKOVIEW_REVIEW_DIR": str(tmp / "rv"),
           "LEUKOVIEW_DATA_ROOT": str(root)}
    proc, port = start_server(env, tmp / "streamlit.log")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            yield proc, port, browser.new_page(viewport={"width": 1400, "height": 1800})
            browser.close()
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default=str(REPO / "models" / recommended_for("wbc9")))
    ap.add_argument("--folder", default="wbc5/test/myeloblast", help="folder under the data root")
    ap.add_argument("--keys", type=int, default=100)
    ap.add_argument("--shots", default=str(REPO / "bench" / "review_shots"))
    args = ap.parse_args(argv)
    from leukoview.primitives import settings

    root = settings.data_roots()[0]
    with tempfile.TemporaryDirectory() as tmp, served(Path(args.bundle), root, Path(tmp)) as (_, port, page):
        t = drive(page, port, folder_id=f"0:{args.folder}", reviewer="Benchmark", keys=args.keys,
                  shots=Path(args.shots))
        first = next(p for p in sorted((root / args.folder).rglob("*")) if p.is_file())
        t["cam"] = cam_controls(page, port, first)
    print(f"bundle {Path(args.bundle).name}, folder {args.folder}")
    print(summary(t))
    (Path(args.shots) / "timings.json").write_text(json.dumps(t, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
