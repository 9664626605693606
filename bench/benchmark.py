"""Speed benchmark: each fast path against the naive way, in the same run (ratios; these machines are noisy).

``python -m bench`` prints one table:

- batch scoring throughput on real images: the library's path (:func:`~leukoview.jobs.predict.score_files`: ONNX
  Runtime when installed, decoding in threads, micro-batches) against the naive loop (open one file, transform,
  forward one image through the eager network, repeat), with the largest score difference between the two;
- single image, prediction + Grad-CAM, median of 30: the library's path (ONNX prediction, CAM differentiating
  from the target layer only) against eager prediction + a plain full-backward CAM;
- the threshold explorer on 100k synthetic scores: every slider-dependent number (confusion, rates, bootstrap
  intervals) against scikit-learn recomputed per move;
- cold start: ``streamlit run Home.py`` to Home's first complete render in headless Chromium, against what
  importing torch and loading the model at start-up (the naive Home) would add;
- peak memory of scoring 5,000 synthetic images (a separate process: ``python -m bench.load_5000``).
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Row:
    what: str
    fast: float
    naive: float
    unit: str
    target: str = ""
    note: str = ""

    @property
    def ratio(self) -> float:
        """How many times better the fast path is (throughput: fast/naive; times: naive/fast)."""
        if not (self.fast and self.naive) or np.isnan(self.fast) or np.isnan(self.naive):
            return float("nan")
        return self.fast / self.naive if self.unit.endswith("/s") else self.naive / self.fast


def _median_ms(fn: Callable[[], object], runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def _alternate(naive: Callable[[], object], fast: Callable[[], object], rounds: int):
    """Time ``naive`` then ``fast``, ``rounds`` times in turn (a burst of background load then hits both alike).
    Returns their times in seconds and each one's last result."""
    t_naive, t_fast = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        naive_out = naive()
        t_naive.append(time.perf_counter() - t)
        t = time.perf_counter()
        fast_out = fast()
        t_fast.append(time.perf_counter() - t)
    return t_naive, t_fast, naive_out, fast_out


# --------------------------------------------------------------------------------------------- scoring


def naive_scorer(bundle_path: Path) -> Callable[[list[Path]], np.ndarray]:
    """The naive loop, model loaded: for each file, open, transform, forward batch 1 through the eager network."""
    import torch

    from leukoview.jobs.predict import softmax
    from leukoview.models.bundle import load_bundle
    from leukoview.models.transforms import eval_transform
    from leukoview.primitives.images import load_image

    b = load_bundle(bundle_path)
    model = b.build_model()
    tf = eval_transform(b.card.input)
    pos = [b.classes.index(c) for c in b.positive]

    def score(paths: list[Path]) -> np.ndarray:
        out = []
        with torch.no_grad():
            for p in paths:
                x = tf(load_image(p))
                # a cell-level model's transform gives one crop per cell: the image's logits are their mean
                logits = model(x if x.ndim == 4 else x[None]).numpy().mean(0, keepdims=True)
                out.append(softmax(logits, b.card.temperature)[0, pos].sum())
        return np.array(out)

    return score


def bench_scoring(bundle_path: Path, paths: list[Path], *, backend: str = "auto", rounds: int = 3) -> tuple[Row, dict]:
    """Both ways with their model already loaded and warmed up on 8 images; ``rounds`` alternating runs of each
    over the same images, median throughput of each (a burst of background load then hits both alike)."""
    from leukoview.jobs.predict import SCORE_CHUNK, Predictor, score_files

    naive = naive_scorer(bundle_path)
    predictor = Predictor(bundle_path, backend=backend)
    naive(paths[:8])
    score_files(paths[:8], predictor, base=Path("/"))  # warm-up (ONNX session, thread pool)
    t_naive, t_fast, naive_out, df = _alternate(lambda: naive(paths),
                                                lambda: score_files(paths, predictor, base=Path("/")), rounds)
    diff = float(np.abs(df["suspicion"].to_numpy(float) - naive_out).max())
    fast_rates = sorted(len(paths) / t for t in t_fast)
    naive_rates = sorted(len(paths) / t for t in t_naive)
    row = Row(f"batch scoring, {len(paths)} real images, median of {rounds}", float(np.median(fast_rates)),
              float(np.median(naive_rates)), "images/s", ">= 4x",
              f"{predictor.backend}, decode in threads, chunks of {SCORE_CHUNK} vs eager batch-1 loop, models "
              f"loaded and warmed up; runs {'/'.join(f'{r:.0f}' for r in fast_rates)} vs "
              f"{'/'.join(f'{r:.0f}' for r in naive_rates)}; largest score difference {diff:.1e}")
    return row, {"max_abs_difference": diff, "backend": predictor.backend, "fast_runs": fast_rates,
                 "naive_runs": naive_rates}


def bench_network_only(bundle_path: Path, images: list, *, rounds: int = 3) -> Row:
    """The ceiling of the scoring row: the network alone on already decoded, normalised input — ONNX Runtime in
    the library's micro-batches against eager batch 1. No decoding, no file access, no OOD or table work."""
    import torch

    from leukoview.jobs.predict import Predictor
    from leukoview.models.transforms import normalise_batch

    fast = Predictor(bundle_path, backend="auto")
    eager = fast.bundle.build_model()  # a plain copy of the network: no feature hook, no second verification
    items = [fast.prepare(im) for im in images]
    if fast.cell_level:  # every cell's crop is one network input
        items = [cell for it in items for cell in it]
    x = torch.from_numpy(normalise_batch(items, fast.spec))
    mb = fast.micro_batch

    def run_fast():
        for i in range(0, len(x), mb):
            fast.forward(x[i:i + mb])

    def run_eager():
        with torch.no_grad():
            for i in range(len(x)):
                eager(x[i:i + 1])

    run_fast()
    run_eager()
    t_eager, t_fast, _, _ = _alternate(run_eager, run_fast, rounds)
    return Row(f"… the network alone on decoded input, {len(x)} {'cell crops' if fast.cell_level else 'images'}",
               len(x) / float(np.median(t_fast)),
               len(x) / float(np.median(t_eager)), "images/s", "",
               f"{fast.backend} micro-batches of {mb} vs eager batch 1: the compute ceiling of the row above")


# --------------------------------------------------------------------------------------------- single image


def bench_single_image(bundle_path: Path, image, *, runs: int = 30) -> list[Row]:
    from leukoview.jobs import explain
    from leukoview.jobs.predict import Predictor
    from leukoview.primitives.segment import crop_cell

    fast = Predictor(bundle_path)
    eager = Predictor(bundle_path, backend="torch")
    layer = fast.bundle.card.cam_layer

    def prediction_and_view(p):  # as the page does: one prediction, and the crop Grad-CAM explains
        if p.cell_level:  # the most suspicious cell, from the same forward as the prediction
            pred, cells, out = p.predict_cells(image)
            crop = cells[int(np.argmax(out["suspicion"]))]
        else:
            pred, crop = p.predict(image), p.locate(image)
        return pred, p.preprocess([image if crop is None else crop_cell(image, crop)], located=True)

    def fast_path():
        pred, x = prediction_and_view(fast)
        explain.cam_mask(fast.model, layer, x, fast.classes.index(pred.predicted))

    def naive_path():
        pred, x = prediction_and_view(eager)
        explain.cam_mask(eager.model, layer, x, eager.classes.index(pred.predicted), fast=False)

    f, n = _median_ms(fast_path, runs), _median_ms(naive_path, runs)
    full = _median_ms(lambda: explain.explain(fast, image), max(5, runs // 3), warmup=1)
    return [Row(f"prediction + Grad-CAM, median of {runs}", f, n, "ms", "<= 100 ms",
                f"{fast.backend} + CAM from the target layer vs eager + full backward"),
            Row("… with the faithfulness read-out (page view)", full, float("nan"), "ms", "",
                "one extra forward of 6 masked copies")]


# --------------------------------------------------------------------------------------------- threshold


def bench_threshold(n: int = 100_000, *, moves: int = 200, seed: int = 0) -> list[Row]:
    from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_auc_score, roc_curve

    from leukoview.app.threshold import GRID_STEP, ThresholdAnalysis

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    t = time.perf_counter()
    ta = ThresholdAnalysis(y, s, n_boot=500, seed=seed)
    setup = time.perf_counter() - t
    grid = np.round(rng.integers(0, int(1 / GRID_STEP) + 1, moves) * GRID_STEP, 10)

    def fast_move(th):
        p = ta.at(th)
        ta.bootstrap(th)
        return (p.sensitivity, p.specificity, p.ppv, p.npv, p.f1, p.accuracy)

    def naive_move(th):  # what a page without precomputation would do on each move
        pred = s >= th
        tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
        roc_curve(y, s)
        precision_recall_curve(y, s)
        roc_auc_score(y, s)
        return tp, fp, tn, fn

    k = iter(range(10**9))
    f = _median_ms(lambda: fast_move(grid[next(k) % moves]), moves)
    n_naive = 10
    nv = _median_ms(lambda: naive_move(grid[next(k) % moves]), n_naive, warmup=1)
    return [Row(f"threshold move, {n // 1000}k scores (incl. 500 bootstrap CIs)", f, nv, "ms", "<= 10 ms",
                f"sort once + searchsorted + precomputed resample counts vs scikit-learn per move; one-off "
                f"set-up {setup:.2f} s")]


# --------------------------------------------------------------------------------------------- cold start


def _free_port() -> int:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


def cold_start(*, chromium: str = "/usr/bin/chromium", timeout: float = 60.0, env: dict | None = None) -> float:
    """Seconds from launching ``streamlit run Home.py`` to Home's first complete render in headless Chromium."""
    from playwright.sync_api import sync_playwright

    port = _free_port()
    args = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=args, headless=True)
        page = browser.new_page()
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "Home.py", "--server.headless", "true",
                                 "--server.port", str(port), "--browser.gatherUsageStats", "false"],
                                cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            while True:  # the health endpoint answers once the server listens; then the browser navigates
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1):
                        break
                except OSError:
                    if time.perf_counter() - t0 > timeout:
                        raise TimeoutError("streamlit did not start") from None
                    time.sleep(0.02)
            page.goto(f"http://127.0.0.1:{port}/", timeout=timeout * 1000)
            page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"] h1',
                                   timeout=timeout * 1000)
            elapsed = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(10)
            browser.close()
    return elapsed


def naive_start_overhead(bundle_path: Path) -> float:
    """Seconds a Home page that imported torch and loaded the model at start-up would add (fresh process)."""
    code = ("import time; t=time.perf_counter(); from leukoview.jobs.predict import Predictor; "
            f"Predictor({str(bundle_path)!r}); print(time.perf_counter()-t)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def bench_cold_start(bundle_path: Path, *, runs: int = 3) -> Row:
    times = [cold_start() for _ in range(runs)]
    extra = naive_start_overhead(bundle_path)
    home = float(np.median(times))
    return Row(f"cold start to Home rendered, median of {runs}", home, home + extra, "s", "<= 3 s",
               f"naive = Home importing torch and loading the model at start (+{extra:.1f} s measured)")


# --------------------------------------------------------------------------------------------- memory


def bench_memory(bundle_path: Path, n: int = 5000) -> Row:
    out = subprocess.run([sys.executable, "-m", "bench.load_5000", "--n", str(n), "--bundle", str(bundle_path)],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    peak = float(re.search(r"peak resident memory of this process: (\d+)", out).group(1))
    rate = float(re.search(r"= ([\d.]+) images/s", out).group(1))
    return Row(f"peak memory scoring {n:,} images", peak, float("nan"), "MB", "< 2048 MB",
               f"{rate:.0f} images/s, synthetic 224-px JPEGs, one process")


# --------------------------------------------------------------------------------------------- table


def format_table(rows: list[Row]) -> str:
    lines = ["| measurement | fast path | naive | unit | better by | target | how |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        def v(x):
            return "—" if x is None or np.isnan(x) else f"{x:.3g}" if x < 100 else f"{x:.0f}"

        ratio = "—" if np.isnan(r.ratio) else f"{r.ratio:.1f}x"
        lines.append(f"| {r.what} | {v(r.fast)} | {v(r.naive)} | {r.unit} | {ratio} | {r.target} | {r.note} |")
    return "\n".join(lines)


def run(bundle_path: Path, image_paths: list[Path], *, runs: int = 30, threshold_n: int = 100_000,
        cold: bool = True, memory: bool = True, progress: Callable[[str], None] = print) -> list[Row]:
    """Every measurement, in order; ``progress`` is told what runs next."""
    import torch

    from leukoview.primitives.images import load_image

    torch.set_num_threads(2)
    rows = []
    progress(f"batch scoring: {len(image_paths)} images, naive loop and library path, 3 rounds each …")
    rows.append(bench_scoring(bundle_path, image_paths)[0])
    rows.append(bench_network_only(bundle_path, [load_image(p) for p in image_paths[:128]]))
    progress("single image: prediction + Grad-CAM …")
    rows += bench_single_image(bundle_path, load_image(image_paths[0]), runs=runs)
    progress(f"threshold explorer: {threshold_n:,} scores …")
    rows += bench_threshold(threshold_n)
    if cold:
        progress("cold start in headless Chromium …")
        try:
            rows.append(bench_cold_start(bundle_path))
        except (ImportError, OSError, TimeoutError) as e:
            progress(f"cold start skipped: {e}")
    if memory:
        progress("peak memory: scoring 5,000 synthetic images in a fresh process …")
        rows.append(bench_memory(bundle_path))
    return rows
