"""Scoring throughput of a bundle by forward micro-batch size (the figure behind Predictor.micro_batch), or with
``--chunks`` by the number of images decoded per step (the figure behind predict.SCORE_CHUNK).

    python -m bench.micro_batch [--backend torch|onnx] [--bundle models/all4-efficientnet_lite0] [--n 128]
    python -m bench.micro_batch --backend onnx --chunks --folder all4 --n 512

Reads images from the data root (LEUKOVIEW_DATA_ROOT); prints images/s per size (best of 2), 2 threads.
"""
import argparse
import time
from pathlib import Path

import torch

from leukoview.jobs.predict import Predictor, find_images, score_files
from leukoview.primitives import settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=str(settings.models_dir() / "all4-efficientnet_lite0"))
    ap.add_argument("--folder", default="all4/Pre", help="folder relative to the data root")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    ap.add_argument("--chunks", action="store_true", help="vary the decode chunk instead of the micro-batch")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    root = settings.data_root()
    found = find_images(root / a.folder)
    paths = [found[int(i * len(found) / a.n)] for i in range(min(a.n, len(found)))]  # spread over subfolders
    if not paths:
        raise SystemExit(f"no images under {root / a.folder}; set LEUKOVIEW_DATA_ROOT")
    p = Predictor(a.bundle, backend=a.backend)
    score_files(paths[:8], p, base=root)  # warm-up

    def rate(**kw) -> float:
        best = 0.0
        for _ in range(2):
            t = time.perf_counter()
            score_files(paths, p, base=Path(root), **kw)
            best = max(best, len(paths) / (time.perf_counter() - t))
        return best

    if a.chunks:
        print(f"{len(paths)} images from {a.folder}, {a.backend}, {a.threads} threads, micro-batch {p.micro_batch}")
        for chunk in (16, 32, 64, 128, 256):
            print(f"decode chunk {chunk:>3}: {rate(batch_size=chunk):6.1f} images/s")
        return
    print(f"{len(paths)} images from {a.folder}, {a.backend}, {a.threads} threads, decode chunk 32")
    for mb in (1, 2, 4, 8, 16, 32):
        p.micro_batch = mb
        print(f"micro-batch {mb:>2}: {rate(batch_size=32):6.1f} images/s")

if __name__ == "__main__":
    main()
