"""Many reviewers at once on one server: N headless Chromium sessions (Playwright) review cells with the keyboard
for a fixed time, two of them on the same slide and the others on their own, then each tries to sign off.

    LEUKOVIEW_DATA_ROOT=../shared/data python -m bench.reviewers [--sessions 4] [--seconds 300]
        [--out bench/last_run_reviewers.md]

Each session is its own browser context (its own Streamlit session), driven from its own thread. Afterwards the
review store is checked: every decision a page confirmed ("Saved: …") is in the store exactly once (no lost and no
duplicated decisions), no sign-off was accepted while a newer decision existed for its slide, and the audit trail
verifies. Key-to-next-cell latency (key down -> the panel shows the saved decision) is reported as p50/p95.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.review_flow import ARGS, CHROMIUM, idle, open_folder, start_server, wait_for_keys

REPO = Path(__file__).resolve().parents[1]
# the review panel's message line (the main area's alert that says what the last key did)
MESSAGE_JS = ("() => { const a = [...document.querySelectorAll('[data-testid=\"stMain\"] [data-testid=\"stAlert\"]')]"
              ".find(e => /Saved:|Not saved|Keys and buttons/.test(e.innerText)); return a ? a.innerText : ''; }")
PANEL_JS = f"old => ({MESSAGE_JS})() !== old"


def panel_message(page) -> str:
    return page.evaluate(MESSAGE_JS)


def reviewer(port: int, folder_id: str, name: str, seconds: float, out: dict, barrier: threading.Barrier) -> None:
    from playwright.sync_api import sync_playwright

    latencies, saved, errors = [], 0, []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        try:
            open_folder(page, port, folder_id, name)
            page.get_by_text("Keyboard review").click()
            idle(page)
            wait_for_keys(page)
            page.locator("h1").first.click()
            barrier.wait(timeout=600)
            end = time.time() + seconds
            while time.time() < end:
                before = panel_message(page)
                t = time.perf_counter()
                page.keyboard.press("c")
                try:
                    page.wait_for_function(PANEL_JS, arg=before, timeout=30_000)
                except Exception as e:  # noqa: BLE001 (a slow answer is counted, not fatal)
                    errors.append(f"timeout: {e}"[:120])
                    continue
                latencies.append(time.perf_counter() - t)
                text = panel_message(page)
                if text.startswith("Saved:"):
                    saved += 1
                elif "Not saved" in text:
                    errors.append(text[:120])
                    page.reload()  # a conflict: see the other reviewer's decision, go on
                    idle(page)
                    wait_for_keys(page)
                    page.locator("h1").first.click()
            page.get_by_text("Keyboard review").click()  # off: the sign-off form has a text field
            idle(page)
            page.get_by_text("Sign off with").or_(page.get_by_text("I have reviewed every cell")).first.click()
            page.get_by_role("button", name="Sign off this folder").click()
            idle(page, settle=1000)
        finally:
            browser.close()
    out[name] = {"latencies": latencies, "saved": saved, "errors": errors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    from leukoview.app.review import ReviewStore
    from leukoview.primitives.tasks import recommended_for

    root = Path(os.environ.get("LEUKOVIEW_DATA_ROOT", REPO.parent / "shared" / "data")).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        rec = recommended_for("wbc9")
        shutil.copytree(REPO / "models" / rec, models / rec)
        env = {**os.environ, "LEUKOVIEW_MODELS_DIR": str(models), "LEUKOVIEW_REVIEW_DIR": str(Path(tmp) / "rev"),
               "LEUKOVIEW_DATA_ROOT": str(root), "LEUKOVIEW_MLFLOW": "0"}
        proc, port = start_server(env, Path(tmp) / "streamlit.log")
        folders = ["0:wbc5/test/myeloblast", "0:wbc5/test/myeloblast", "0:wbc5/test/monocyte",
                   "0:wbc5/test/basophil", "0:wbc5/test/erythroblast", "0:wbc5/val/myeloblast"]
        out: dict = {}
        barrier = threading.Barrier(a.sessions)
        threads = [threading.Thread(target=reviewer, args=(port, folders[i % len(folders)], f"Reviewer {i + 1}",
                                                            a.seconds, out, barrier)) for i in range(a.sessions)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            proc.terminate()
            proc.wait(30)
        store = ReviewStore(Path(tmp) / "rev" / "decisions.sqlite")
        batches = {f"{root}::{f.split(':', 1)[1]}" for f in folders[: a.sessions]}
        rows = sum(len(store.history(b)) for b in batches)
        saved = sum(v["saved"] for v in out.values())
        stale = 0
        for b in batches:
            hist = store.history(b)
            for s in store.sign_offs(b).to_dict("records"):
                newer = hist[(hist["created_at"] <= s["created_at"])]["id"].max() if len(hist) else None
                stale += int(newer is not None and s["last_decision"] is not None and newer > s["last_decision"])
        trail = store.verify()
        lat = np.array([x for v in out.values() for x in v["latencies"]]) * 1000
        errors = [e for v in out.values() for e in v["errors"]]
    text = "\n".join([
        f"# {a.sessions} reviewers at once ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, one server, {rec})",
        "", "`python -m bench.reviewers`", "", "| row | figure | target |", "|---|---|---|",
        f"| sessions x time | {a.sessions} x {a.seconds:.0f} s (two on the same slide) | 4 x 300 s |",
        f"| decisions confirmed on the pages / rows in the store | {saved} / {rows} | equal (0 lost, 0 duplicated) |",
        f"| sign-offs accepted over a newer decision | {stale} | 0 |",
        f"| audit trail | {'intact' if trail['ok'] else 'BROKEN: ' + trail['problem']}, {trail['entries']} entries | "
        "intact |",
        f"| key to next cell | p50 {np.percentile(lat, 50):.0f} ms, p95 {np.percentile(lat, 95):.0f} ms over "
        f"{len(lat)} keys | p95 <= 500 ms |",
        f"| refused (conflicts, shown to the reviewer) or slow | {len(errors)} | |", ""])
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
