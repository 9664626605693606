"""CPU latency of a bundle, measured the same way for every model (decoded image -> probabilities, suspicion and
OOD score, ``threads`` threads): ``python -m leukoview measure BUNDLE`` writes ``latency.json`` into the bundle;
the comparison table reads it back with :func:`latency_of`."""
from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image

from leukoview import audits
from leukoview.models import bundle

LATENCY = bundle.LATENCY


def latency_of(b: bundle.Bundle) -> dict | None:
    """The measured CPU latency recorded in the bundle (written by :func:`measure_latency`), if any."""
    return audits.result(b, audits.LATENCY)


def measure_latency(folder: Path, *, runs: int = 30, threads: int = 2) -> dict:
    """Median single-image CPU latency (decoded image -> probabilities) with ``threads`` threads; written
    into the bundle as ``latency.json`` and recorded in its card."""
    import torch  # here, not at import: the comparison table reads latency_of without torch

    from leukoview.jobs.predict import Predictor

    b = bundle.load_bundle(folder)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))  # an all4-sized decoded image
    try:
        p = Predictor(b)
        for _ in range(3):
            p.predict_batch([image])
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            p.predict_batch([image])
            times.append((time.perf_counter() - t) * 1000)
    finally:
        torch.set_num_threads(previous)
    runtime = {"onnx": "ONNX Runtime", "torch": f"torch {torch.__version__} eager",
               "classical": "numpy/scikit-learn features + stored model"}[p.backend]
    result = {"median_ms": round(float(np.median(times)), 2), "p90_ms": round(float(np.quantile(times, 0.9)), 2),
              "runs": runs, "threads": threads, "batch_size": 1, "runtime": runtime,
              "measures": "decoded 224x224 image -> preprocessing/features -> probabilities, suspicion, OOD",
              "cpu": platform.processor() or platform.machine()}
    audits.store(b.path, audits.LATENCY, result)
    return result


def run(bundle_path: Path, root: Path | None = None, *, runs: int = 30, threads: int = 2,
        progress: bool = False) -> dict:
    """The audit's one entry: :func:`measure_latency` (on a generated image: ``root`` is not read)."""
    return measure_latency(Path(bundle_path), runs=runs, threads=threads)
