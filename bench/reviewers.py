"""Many reviewers at once on one server: N headless Chromium sessions (Playwright) review cells with the keyboard
for a fixed time, two of them on the same slide and the others on their own, then each tries to sign off.

    LEUKOVIEW_DATA_ROOT=../shared/data python -m bench.reviewers [--sessions 4] [--seconds 300] [--think 0]
        [--out bench/last_run_reviewers.md]

Each session is its own browser context (its own Streamlit session), driven from its own thread; at a folder's last
cell it opens the folder again at the first. ``--think S``: each key follows a look at the cell of 0.5-1.5 x S
seconds; 0 (the default) presses the next key as soon as the last is answered. Afterwards the review store is
checked: every decision a page confirmed ("Saved: FILE → LABEL") is in the store exactly once, counted per
reviewer, cell and label (a lost and a duplicated decision do not cancel), no sign-off was accepted while a newer
decision existed for its slide, and the audit trail verifies. Key-to-next-cell latency (key down -> the panel shows
the saved decision) is reported as p50/p95.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np

from bench.review_flow import ARGS, CHROMIUM, idle, open_folder, start_server, wait_for_keys

REPO = Path(__file__).resolve().parents[1]
# the review panel's message line (the main area's alert that says what the last key did)
MESSAGE_JS = ("() => { const a = [...document.querySelectorAll('[data-testid=\"stMain\"] [data-testid=\"stAlert\"]')]"
              ".find(e => /Saved:|Not saved|Keys and buttons/.test(e.innerText)); return a ? a.innerText : ''; }")
# a new answer to the key: a saved or refused decision (not the line a redraw shows for a moment)
PANEL_JS = f"old => {{ const m = ({MESSAGE_JS})(); return m !== old && /^(Saved:|Not saved)/.test(m); }}"
CELL_JS = ("() => { const m = document.body.innerText.match(/Cell (\\d+) of (\\d+)/); "
           "return m ? [+m[1], +m[2]] : null; }")


def panel_message(page) -> str:
    return page.evaluate(MESSAGE_JS)


def confirmed(message: str) -> tuple[str, str]:
    """(file, label) from the panel's "Saved: FILE → LABEL" line."""
    file, _, label = message.split("\n")[0].removeprefix("Saved:").strip().rpartition(" → ")
    return file, label.strip()


def tally(out: dict, history: list[dict]) -> dict:
    """Decisions the pages confirmed against the store's rows, per reviewer and cell, as multisets: a confirmed
    decision missing from the store is lost, a row no page confirmed (or one confirmed once and stored twice) is
    a duplicate. A lost and a duplicated decision do not cancel."""
    from collections import Counter

    pages = Counter((name, f, lab) for name, v in out.items() for f, lab in v["saved"])
    shown = {"second_review": "second review"}
    store = Counter((r["reviewer"], r["file"], shown.get(r["action"], r["label"])) for r in history)
    for kind, extra in (("lost", pages - store), ("duplicated", store - pages)):
        for item in list(extra.elements())[:5]:
            print(f"{kind}: {item}", file=sys.stderr)
    return {"confirmed": sum(pages.values()), "rows": sum(store.values()),
            "lost": sum((pages - store).values()), "duplicated": sum((store - pages).values())}


def _ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


def cpu_sampler(server_pid: int, stop: threading.Event, samples: list) -> None:
    """Every second: (time, the server's CPU ticks, all Chromium processes' CPU ticks), from /proc (Linux)."""
    while not stop.is_set():
        browsers = 0
        for d in Path("/proc").glob("[0-9]*"):
            try:
                if b"chrom" in (d / "cmdline").read_bytes()[:200]:
                    browsers += _ticks(int(d.name))
            except OSError:
                continue
        samples.append((time.time(), _ticks(server_pid), browsers))
        stop.wait(1.0)


def cpu_row(samples: list, out: dict, keys: int) -> str:
    """CPU while every session pressed keys: cores used by the server and by the browsers, and CPU-ms per key."""
    windows = [v["window"] for v in out.values() if v.get("window")]
    if not windows or not samples or not keys:
        return "not measured (no /proc)"
    t0, t1 = max(w[0] for w in windows), min(w[1] for w in windows)
    inside = [x for x in samples if t0 <= x[0] <= t1]
    if len(inside) < 2:
        return "not measured (too short)"
    (a, s0, b0), (z, s1, b1) = inside[0], inside[-1]
    hz, span = os.sysconf("SC_CLK_TCK"), z - a
    share = keys * span / max(np.mean([w[1] - w[0] for w in windows]), 1e-9)  # keys pressed inside the window
    return (f"server {(s1 - s0) / hz / span:.2f} cores, browsers {(b1 - b0) / hz / span:.2f} cores over {span:.0f} s; "
            f"a key: server {1000 * (s1 - s0) / hz / share:.0f} ms, browser {1000 * (b1 - b0) / hz / share:.0f} ms "
            "of CPU")


def start(page, port: int, folder_id: str, name: str, *, rescore: bool) -> None:
    """The folder open at its first cell, keyboard review on, the focus outside any text field."""
    open_folder(page, port, folder_id, name, rescore=rescore)
    page.get_by_text("Keyboard review").click()
    idle(page)
    wait_for_keys(page, timeout=60)
    page.locator("h1").first.click()


def reviewer(port: int, folder_id: str, name: str, seconds: float, out: dict, barrier: threading.Barrier,
             think: float = 0.0) -> None:
    from playwright.sync_api import sync_playwright

    latencies, saved, errors, timeouts, window = [], [], [], 0, None
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        try:
            for attempt in range(3):  # four browsers starting at once on two cores: a slow first load is retried
                try:
                    start(page, port, folder_id, name, rescore=True)
                    break
                except Exception:  # noqa: BLE001
                    if attempt == 2:
                        barrier.abort()
                        raise
            barrier.wait(timeout=600)
            end = time.time() + seconds
            window = (time.time(), end)
            while time.time() < end:
                at = page.evaluate(CELL_JS)
                if at and at[0] == at[1]:  # the folder's last cell: open the folder again at its first cell
                    start(page, port, folder_id, name, rescore=False)
                    continue
                if think:  # a reviewer looking at the cell before the key: 0.5 to 1.5 times --think
                    page.wait_for_timeout(1000 * think * rng.uniform(0.5, 1.5))
                before = panel_message(page)
                t = time.perf_counter()
                page.keyboard.press("c")
                try:
                    page.wait_for_function(PANEL_JS, arg=before, timeout=30_000)
                except Exception:  # noqa: BLE001 (a slow answer is counted, not fatal)
                    timeouts += 1
                    continue
                latencies.append(time.perf_counter() - t)
                text = panel_message(page)
                if text.startswith("Saved:"):
                    saved.append(confirmed(text))
                elif "Not saved" in text:  # a conflict: the panel now shows the other reviewer's decision; the
                    errors.append(text[:120])  # next key decides again over it, as a reviewer would
            page.get_by_text("Keyboard review").click()  # off: the sign-off form has a text field
            idle(page)
            page.get_by_text("Sign off with").or_(page.get_by_text("I have reviewed every cell")).first.click()
            page.get_by_role("button", name="Sign off this folder").click()
            idle(page, settle=1000)
        except Exception as e:  # noqa: BLE001 (a session that fails is reported, with what it confirmed so far)
            failed = f"{type(e).__name__}: {str(e).splitlines()[0]}"[:160]
        else:
            failed = ""
        finally:
            browser.close()
    out[name] = {"latencies": latencies, "saved": saved, "errors": errors, "timeouts": timeouts, "failed": failed,
                 "window": window}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--think", type=float, default=0.0,
                    help="seconds a reviewer looks at a cell before its key (mean; 0: the next key as soon as the "
                         "last is answered, a stress test)")
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
                                                            a.seconds, out, barrier, a.think))
                   for i in range(a.sessions)]
        samples: list = []
        stop = threading.Event()
        sampler = threading.Thread(target=cpu_sampler, args=(proc.pid, stop, samples), daemon=True)
        try:
            sampler.start()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            stop.set()
            proc.terminate()
            proc.wait(30)
        store = ReviewStore(Path(tmp) / "rev" / "decisions.sqlite")
        batches = {f"{root}::{f.split(':', 1)[1]}" for f in folders[: a.sessions]}
        counts = tally(out, [r for b in batches for r in store.history(b).to_dict("records")])
        stale = 0
        for b in batches:
            hist = store.history(b)
            for s in store.sign_offs(b).to_dict("records"):
                newer = hist[(hist["created_at"] <= s["created_at"])]["id"].max() if len(hist) else None
                stale += int(newer is not None and s["last_decision"] is not None and newer > s["last_decision"])
        trail = store.verify()
        lat = np.array([x for v in out.values() for x in v["latencies"]]) * 1000
        errors = [e for v in out.values() for e in v["errors"]]
        timeouts = sum(v["timeouts"] for v in out.values())
        failed = [f"{k}: {v['failed']}" for k, v in sorted(out.items()) if v["failed"]]
    text = "\n".join([
        f"# {a.sessions} reviewers at once ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, one server, {rec})",
        "", f"`python -m bench.reviewers --sessions {a.sessions} --seconds {a.seconds:.0f} --think {a.think:g}`", "",
        ("Each reviewer presses the next key as soon as the last is answered (a stress test); the "
         f"{a.sessions} browsers run on the server's own two cores." if not a.think else
         f"Each reviewer looks at a cell for {a.think / 2:g} to {1.5 * a.think:g} s (uniform) before its key; the "
         f"{a.sessions} browsers run on the server's own two cores."), "",
        "| row | figure | target |", "|---|---|---|",
        f"| sessions x time | {a.sessions} x {a.seconds:.0f} s (two on the same slide) | 4 x 300 s |",
        f"| decisions confirmed on the pages / rows in the store | {counts['confirmed']} / {counts['rows']} | equal |",
        f"| lost / duplicated (per reviewer, cell and label) | {counts['lost']} / {counts['duplicated']} | 0 / 0 |",
        f"| sign-offs accepted over a newer decision | {stale} | 0 |",
        f"| audit trail | {'intact' if trail['ok'] else 'BROKEN: ' + trail['problem']}, {trail['entries']} entries | "
        "intact |",
        f"| key to next cell | p50 {np.percentile(lat, 50):.0f} ms, p95 {np.percentile(lat, 95):.0f} ms over "
        f"{len(lat)} keys | p95 <= 500 ms |",
        f"| CPU while the keys ran ({os.cpu_count()} CPUs) | {cpu_row(samples, out, len(lat))} | |",
        f"| refused (a conflict, shown to the reviewer) | {len(errors)} | |",
        f"| keys with no answer within 30 s (not in the latencies) | {timeouts} | 0 |",
        f"| sessions that failed | {len(failed)}{' (' + '; '.join(failed) + ')' if failed else ''} | 0 |", ""])
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
