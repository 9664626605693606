"""Model comparison from bundle files only: the table, per-class recall and a paired test on shared images."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import bundle as B

LATENCY = "latency.json"


def comparison_table(bundles: list[B.Bundle]) -> pd.DataFrame:
    """One row per bundle with the figures the comparison page and ``leukoview compare`` show."""
    rows = []
    for b in bundles:
        m, c = b.metrics, b.card
        lat = latency_of(b)
        tr = c.get("training", {})
        rows.append({
            "model": b.id, "task": c.get("task", ""), "architecture": c["architecture"],
            "kind": c.get("kind", "network") if c.get("kind") != "classical" else
            f"classical on {c['input'].get('features', '?')}",
            "ImageNet init": bool(c.get("imagenet_initialised")), "parameters": c.get("parameters"),
            "size (MB)": round(sum((b.path / f).stat().st_size for f in c.get("files", {})
                                   if f.startswith(("model.", "xgboost."))) / 2**20, 2),
            "input px": c["input"]["size"],
            "epochs": (f"best {tr.get('best_epoch')}, ran {tr.get('epochs_run')}/{tr['config'].get('epochs')}"
                       if c.get("kind", "network") == "network" and "config" in tr else "—"),
            "accuracy": m["accuracy"], "balanced accuracy": m["balanced_accuracy"], "ROC-AUC": m["roc_auc"],
            "PR-AUC": m["pr_auc"], "threshold": b.threshold,
            "sensitivity": m["at_threshold"]["sensitivity"], "specificity": m["at_threshold"]["specificity"],
            "ECE": m["ece"], "test images": m["n_images"],
            "training time (min)": round(c.get("training", {}).get("wall_time_s", float("nan")) / 60, 1),
            "CPU latency (ms/img)": lat.get("median_ms") if lat else None,
            "note": tr.get("note", ""),
            "split": c.get("split", {}).get("hash", ""),
        })
    return pd.DataFrame(rows)


def per_class_recall(bundles: list[B.Bundle]) -> pd.DataFrame:
    rows = []
    for b in bundles:
        for r in b.metrics["per_class"]:
            rows.append({"model": b.id, "class": r["class"], "recall": r["recall"], "support": r["support"]})
    return pd.DataFrame(rows)


def mcnemar(a: B.Bundle, b: B.Bundle) -> dict:
    """Exact McNemar test on the test images both bundles scored (same split required): do they err on
    different images more often than chance would give?"""
    from scipy.stats import binomtest

    if a.card.get("split", {}).get("hash") != b.card.get("split", {}).get("hash"):
        raise ValueError(f"{a.id} and {b.id} were evaluated on different splits; a paired test needs the same "
                         "test images")
    pa, pb = a.predictions(), b.predictions()
    if list(a.classes) != list(b.classes):
        raise ValueError(f"{a.id} and {b.id} predict different classes")
    m = pa[["file", "label", "predicted"]].merge(pb[["file", "predicted"]], on="file", suffixes=("_a", "_b"))
    ra, rb = m["predicted_a"] == m["label"], m["predicted_b"] == m["label"]
    only_a, only_b = int((ra & ~rb).sum()), int((~ra & rb).sum())
    n = only_a + only_b
    p = float(binomtest(only_a, n, 0.5).pvalue) if n else 1.0
    return {"images": int(len(m)), "both_right": int((ra & rb).sum()), "both_wrong": int((~ra & ~rb).sum()),
            "only_a_right": only_a, "only_b_right": only_b, "p_value": p,
            "reading": ("no evidence the two differ on these images" if p >= 0.05 else
                        f"{a.id if only_a > only_b else b.id} is right significantly more often (p={p:.3g})")}


def latency_of(b: B.Bundle) -> dict | None:
    """The measured CPU latency recorded in the bundle (written by :func:`measure_latency`), if any."""
    path = b.path / LATENCY
    if LATENCY not in b.card.get("files", {}) or not path.is_file():
        return None
    return json.loads(path.read_text())


def measure_latency(folder: Path, *, runs: int = 30, threads: int = 2) -> dict:
    """Median single-image CPU latency (decoded image -> probabilities) with ``threads`` threads; written
    into the bundle as ``latency.json`` and recorded in its card."""
    import platform

    import torch
    from PIL import Image

    from .predict import Predictor

    b = B.load_bundle(folder)
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
    B.write_json(b.path / LATENCY, result)
    B.refinalize(b)
    return result


def markdown_table(df: pd.DataFrame) -> str:
    """A DataFrame as a GitHub Markdown table (metrics to 4 decimals; sizes, times and latencies to 3 figures)."""
    plain = {"size (MB)", "training time (min)", "CPU latency (ms/img)", "threshold"}

    def cell(v, col):
        if v is None:
            return "—"
        if isinstance(v, float):
            if np.isnan(v):
                return ""
            if col in plain:
                return f"{v:.3g}"
            return f"{v:.4g}" if abs(v) >= 10 else f"{v:.4f}"
        return str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v, c) for v, c in zip(row, df.columns, strict=True)) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines)
