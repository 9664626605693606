"""Every shipped bundle re-scores its whole test split with the code as it is now, and the outputs are compared
bit for bit with a recorded fingerprint (and, within fp16 tolerance, with the bundle's stored predictions.csv).

    LEUKOVIEW_DATA_ROOT=../shared/data python scripts/reproduce_predictions.py --record   # before a change
    LEUKOVIEW_DATA_ROOT=../shared/data python scripts/reproduce_predictions.py            # after it

``--record`` writes ``reports/reproduce/fingerprints.json``: per bundle, the sha256 of the float32 bytes of every
output the app shows (class probabilities, suspicion, decision, OOD score and flag, wrong-task score, palette
distance) over the test split in file order. The check run re-scores, compares each sha256 exactly and writes
``reports/reproduce/last_run.md``. Fingerprints are only comparable on the same CPU, thread count and library versions
(other SIMD paths round differently; the recorded file names them); the stored predictions.csv was written from the fp32
weights before they were saved as fp16, so against it the script reports the largest difference and whether every
decision clear of the threshold by the fp16 tolerance agrees.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leukoview.jobs.predict import Predictor  # noqa: E402
from leukoview.models.bundle import list_bundles, load_bundle  # noqa: E402
from leukoview.primitives import settings  # noqa: E402
from leukoview.primitives.images import load_image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "reports" / "reproduce"
KEYS = ("probs", "suspicion", "decision", "ood_score", "ood_flag", "wrong_task", "palette")
TOL = 2e-3  # what fp16 weights and another CPU's SIMD paths allow (tests/test_real_data.py uses the same)
BATCH = 32


def machine() -> dict:
    import torch

    flags = ""
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0]
    except (OSError, IndexError):
        pass
    return {"cpu": platform.processor() or platform.machine(), "avx512f": " avx512f" in flags,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "numpy": np.__version__}


def rescore(b, root: Path) -> dict[str, np.ndarray]:
    """The app's outputs for the bundle's test files, in the order of its predictions.csv."""
    p = Predictor(b)
    files = list(b.predictions()["file"])
    parts: dict[str, list] = {}
    for i in range(0, len(files), BATCH):
        out = p.predict_batch([load_image(root / f) for f in files[i:i + BATCH]])
        for k in KEYS:
            if out.get(k) is not None:
                parts.setdefault(k, []).append(np.asarray(out[k]))
    return {k: np.concatenate(v) for k, v in parts.items()}


def fingerprint(out: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(out):
        h.update(k.encode())
        h.update(np.ascontiguousarray(out[k], dtype=np.float32).tobytes())
    return h.hexdigest()


def against_stored(b, out: dict[str, np.ndarray]) -> dict:
    pred = b.predictions()
    stored = pred["suspicion"].to_numpy()
    probs = pred[[f"p_{c}" for c in b.classes]].to_numpy()
    clear = np.abs(stored - b.threshold) > TOL
    return {"max_diff": float(max(np.abs(out["suspicion"] - stored).max(), np.abs(out["probs"] - probs).max())),
            "decisions_clear": int(clear.sum()),
            "decisions_agree": int(((out["suspicion"] >= b.threshold) == (stored >= b.threshold))[clear].sum())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--record", action="store_true", help="write the fingerprints instead of checking them")
    ap.add_argument("--bundles", nargs="*", help="bundle folders (default: every shipped bundle)")
    a = ap.parse_args(argv)
    root = settings.data_root()
    bundles = [load_bundle(f) for f in a.bundles] if a.bundles else list_bundles(REPO / "models")
    OUT.mkdir(parents=True, exist_ok=True)
    record_file = OUT / "fingerprints.json"
    recorded = {} if a.record else json.loads(record_file.read_text())
    rows, prints, failed = [], {}, 0
    for b in bundles:
        t0 = time.perf_counter()
        out = rescore(b, root)
        fp = fingerprint(out)
        prints[b.id] = fp
        st = against_stored(b, out)
        same = None if a.record else recorded["bundles"].get(b.id) == fp
        failed += same is False or st["decisions_agree"] != st["decisions_clear"]
        rows.append((b.id, len(out["suspicion"]), same, st, time.perf_counter() - t0))
        print(f"{b.id}: {len(out['suspicion'])} images, bit for bit {same}, max diff vs predictions.csv "
              f"{st['max_diff']:.2e}, clear decisions {st['decisions_agree']}/{st['decisions_clear']}", flush=True)
    if a.record:
        record_file.write_text(json.dumps({"machine": machine(), "bundles": prints}, indent=1) + "\n")
        print(f"recorded {len(prints)} fingerprints in {record_file.relative_to(REPO)}")
        return 0
    lines = ["# Shipped bundles re-scored on their test splits", "",
             "`LEUKOVIEW_DATA_ROOT=../shared/data python scripts/reproduce_predictions.py` (written by it).", "",
             f"Recorded on: {recorded['machine']}. Checked on: {machine()}.", "",
             "| bundle | test images | outputs bit for bit as recorded | max diff vs predictions.csv | decisions "
             "clear of the threshold that agree | seconds |", "|---|---|---|---|---|---|"]
    lines += [f"| {i} | {n} | {'yes' if s else 'NO'} | {st['max_diff']:.1e} | {st['decisions_agree']}/"
              f"{st['decisions_clear']} | {t:.0f} |" for i, n, s, st, t in rows]
    lines += ["", f"{sum(1 for r in rows if r[2])} of {len(rows)} bundles bit for bit; {failed} failed."]
    (OUT / "last_run.md").write_text("\n".join(lines) + "\n")
    print(f"{failed} failed; wrote {(OUT / 'last_run.md').relative_to(REPO)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
