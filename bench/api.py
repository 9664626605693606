"""Throughput of the scoring API on this machine: one server process (``python -m leukoview serve``, uvicorn, one
worker), clients in this process.

    LEUKOVIEW_DATA_ROOT=../shared/data python -m bench.api [--bundle ID] [--single 400] [--batches 20]
        [--concurrency 4] [--out bench/last_run_api.md]

Rows: single-image requests (requests/s, p50/p95 latency) and batches of 32 images (images/s, p95 latency), on
real cells (BCCD and the bundle's own test split, cycled). Targets (issue): >= 40 single-image requests/s and >= 80
images/s in batches of 32 on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.review_flow import free_port

REPO = Path(__file__).resolve().parents[1]


def _images(root: Path, bundle_id: str, n: int) -> list[tuple[str, bytes]]:
    from leukoview.models.bundle import load_bundle

    b = load_bundle(REPO / "models" / bundle_id)
    files = sorted((root / "bccd_wbc").rglob("*.jpg"))[: n // 2] + [root / f for f in b.predictions()["file"][: n // 2]]
    return [(p.name, p.read_bytes()) for p in files]


def _wait(url: str, proc, timeout: float = 120) -> None:
    import httpx

    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError("the server exited")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise TimeoutError(url)


def run(bundle: str, *, single: int, batches: int, concurrency: int) -> dict:
    import httpx

    root = Path(os.environ.get("LEUKOVIEW_DATA_ROOT", REPO.parent / "shared" / "data"))
    port = free_port()
    env = {**os.environ, "LEUKOVIEW_MLFLOW": "0", "LEUKOVIEW_API_TOKEN": ""}
    proc = subprocess.Popen([sys.executable, "-m", "leukoview", "serve", "--port", str(port), "--bundle", bundle],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(f"{base}/healthz", proc)
        images = _images(root, bundle, 64)
        client = httpx.Client(timeout=120)

        def post(files):
            t0 = time.perf_counter()
            r = client.post(f"{base}/v1/score", files=[("files", (n, d, "image/jpeg")) for n, d in files])
            r.raise_for_status()
            return time.perf_counter() - t0

        post(images[:2])  # load the model and warm the runtime
        jobs = [[images[k % len(images)]] for k in range(single)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            lat = list(pool.map(post, jobs))
        single_s = time.perf_counter() - t0
        jobs = [[images[(k * 32 + j) % len(images)] for j in range(32)] for k in range(batches)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max(1, concurrency // 2)) as pool:
            blat = list(pool.map(post, jobs))
        batch_s = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {"bundle": bundle, "cpus": os.cpu_count(), "single_requests": single, "concurrency": concurrency,
            "single_rps": single / single_s, "single_p50_ms": 1000 * float(np.percentile(lat, 50)),
            "single_p95_ms": 1000 * float(np.percentile(lat, 95)), "batch_requests": batches,
            "batch_images_per_s": 32 * batches / batch_s, "batch_p95_ms": 1000 * float(np.percentile(blat, 95))}


def main() -> None:
    from leukoview.app.api import create_app  # noqa: F401 (fails early when the serving extra is missing)

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default="")
    ap.add_argument("--single", type=int, default=400)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    from leukoview.app.api import _Models
    from leukoview.primitives.settings import models_dir

    bundle = a.bundle or _Models(models_dir(), None).default
    r = run(bundle, single=a.single, batches=a.batches, concurrency=a.concurrency)
    text = "\n".join([
        f"# Scoring API throughput ({time.strftime('%Y-%m-%d')}, {r['cpus']} CPUs, one uvicorn process, "
        f"bundle {r['bundle']})", "", "`python -m bench.api`", "", "| row | figure | target |", "|---|---|---|",
        f"| single-image requests ({r['single_requests']}, {r['concurrency']} clients) | {r['single_rps']:.1f} "
        f"requests/s; p50 {r['single_p50_ms']:.0f} ms, p95 {r['single_p95_ms']:.0f} ms | >= 40 requests/s |",
        f"| batches of 32 ({r['batch_requests']} requests) | {r['batch_images_per_s']:.1f} images/s; p95 "
        f"{r['batch_p95_ms']:.0f} ms a request | >= 80 images/s |", ""])
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
