"""Scoring a laboratory's archive: resumable scoring in parts, on this process or on a Ray cluster.

``python -m leukoview score FOLDER --bundle B --out OUT.csv --engine ray`` (``--engine local`` stays the default):

- The image list is the local engine's (:func:`leukoview.primitives.images.find_images`), in the same order; only paths
travel,
  never decoded images.
- Each batch of images is scored by :func:`leukoview.jobs.predict.score_files` — the same path as the local engine
(gate,
  cell locating, colour steps, the network under ONNX Runtime, OOD flags, training membership) — inside a Ray actor
  that loads the verified bundle once (``map_batches`` with an actor pool). An image that fails is a row with its
  error; a worker that dies is restarted and its batch retried by Ray.
- Every finished batch is written at once as a part file in ``OUT.parts/`` (atomic rename), so an interrupted run
  (Ctrl-C, a killed worker, a lost node) goes on where it stopped: the next call scores only the images no part
  holds, and a part's rows are kept only while the image's size and modification time are unchanged.
- At the end the parts are merged into OUT.csv: the local engine's columns, in its row order, no duplicates.
- Progress (rows done, rate, expected time) in the terminal and in ``OUT.status.json``.

``RAY_ADDRESS`` set: the run joins that cluster; else a local Ray starts on this machine. Ray is an optional extra,
imported only here.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from leukoview.primitives.images import find_images

BATCH = 64  # the local engine's chunk (predict.SCORE_CHUNK): the same micro-batches, the same numbers
DIE_ONCE_ENV = "LEUKOVIEW_RAY_DIE_ONCE"  # fault injection for the tests: a marker file; the first actor to find
#                                          it missing creates it and dies mid-batch (Ray must retry the batch)


def _key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def parts_dir(out: Path) -> Path:
    return Path(out).with_suffix(".parts")


def done_files(out: Path, folder: Path) -> dict[str, str]:
    """Files (relative to ``folder``) already scored in the parts of an earlier run, with the size:mtime key they
    were scored at."""
    done: dict[str, str] = {}
    for part in sorted(parts_dir(out).glob("part-*.csv")):
        try:
            df = pd.read_csv(part, keep_default_na=False, usecols=["file", "_key"], dtype=str)
        except (OSError, ValueError):
            continue  # a part cut short by a crash is rescored
        done.update(zip(df["file"], df["_key"], strict=True))
    return done


def _write_part(out: Path, csv_text: str) -> None:
    folder = parts_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(csv_text.encode()).hexdigest()[:16]
    tmp = folder / f".part-{name}.tmp"
    tmp.write_text(csv_text)
    os.replace(tmp, folder / f"part-{name}.csv")


class _Scorer:
    """A Ray actor: the verified bundle loaded once; scores a batch of paths exactly as the local engine does."""

    def __init__(self, bundle: str, base: str):
        import torch

        from leukoview.jobs.predict import Predictor

        torch.set_num_threads(1)
        self.predictor = Predictor(bundle)
        self.base = Path(base)

    def __call__(self, batch: dict) -> pd.DataFrame:
        from leukoview.jobs.predict import score_files

        marker = os.environ.get(DIE_ONCE_ENV, "")
        if marker and not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            os._exit(1)  # a worker lost mid-batch
        paths = [Path(p) for p in batch["path"]]
        df = score_files(paths, self.predictor, base=self.base, workers=1)
        df.insert(len(df.columns), "_key", list(batch["key"]))
        # the rows travel as the local engine's CSV text: no column type changes between batches on the way
        return pd.DataFrame({"csv": [df.to_csv(index=False)], "rows": [len(df)]})


def score_ray(folder: Path, bundle: Path | str, out: Path, *, actors: int = 2, address: str | None = None,
              paths: list[Path] | None = None, progress: Callable[[dict], None] | None = None,
              stop_after: int = 0) -> pd.DataFrame:
    """Score ``folder`` (or ``paths`` under it) with ``bundle`` on Ray, resumably; returns the merged table (also
    written to ``out``). ``stop_after``: stop once that many new batches are written (tests: an interrupted run)."""
    import ray

    folder = Path(folder).resolve()
    out = Path(out)
    paths = [Path(p) for p in (paths if paths is not None else find_images(folder))]
    done = done_files(out, folder)
    todo = [(p, k) for p in paths if done.get(p.relative_to(folder).as_posix()) != (k := _key(p))]
    status = {"engine": "ray", "total": len(paths), "done_before": len(paths) - len(todo), "done": 0,
              "started": time.time()}
    _status(out, status, progress)
    if todo:
        if not ray.is_initialized():
            ray.init(address=address or os.environ.get("RAY_ADDRESS") or None, num_cpus=None if address else
                     max(actors, 1), include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                     runtime_env={"env_vars": {k: v for k, v in os.environ.items() if k.startswith("LEUKOVIEW_")}})
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # ours is the progress shown
        ctx.print_on_execution_start = False
        ctx.issue_detectors_config.detectors = []
        ds = ray.data.from_items([{"path": str(p), "key": k} for p, k in todo],
                                 override_num_blocks=-(-len(todo) // BATCH))  # one block a batch
        scored = ds.map_batches(_Scorer, fn_constructor_kwargs={"bundle": str(bundle), "base": str(folder)},
                                batch_size=BATCH, batch_format="numpy", concurrency=actors, num_cpus=1,
                                max_restarts=3, max_task_retries=3)
        written = 0
        for block in scored.iter_batches(batch_size=None, batch_format="pandas"):
            for text, rows in zip(block["csv"], block["rows"], strict=True):
                _write_part(out, text)
                status["done"] += int(rows)
                written += 1
                _status(out, status, progress)
                if stop_after and written >= stop_after and status["done"] < len(todo):
                    raise KeyboardInterrupt(f"stopped after {written} batches (as asked)")
    return merge(folder, out, paths)


def merge(folder: Path, out: Path, paths: list[Path]) -> pd.DataFrame:
    """The parts as one table in the local engine's order and columns, one row per image; written to ``out``."""
    order = {p.relative_to(folder).as_posix(): i for i, p in enumerate(paths)}
    frames = [pd.read_csv(p, keep_default_na=False) for p in sorted(parts_dir(out).glob("part-*.csv"))]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["file"])
    df = df[df["file"].isin(order)].drop_duplicates("file", keep="last")
    df = df.assign(_order=df["file"].map(order)).sort_values("_order").drop(columns=["_order", "_key"])
    missing = len(order) - len(df)
    if missing:
        raise RuntimeError(f"{missing} images have no score yet; run again to go on")
    df.to_csv(out, index=False)
    return df.reset_index(drop=True)


def _status(out: Path, status: dict, progress) -> None:
    elapsed = max(time.time() - status["started"], 1e-9)
    rate = status["done"] / elapsed
    left = status["total"] - status["done_before"] - status["done"]
    status = {**status, "rate_per_s": round(rate, 2), "eta_s": round(left / rate, 1) if rate else None,
              "updated": time.time()}
    try:
        Path(out).with_suffix(".status.json").write_text(json.dumps(status))
    except OSError:
        pass
    if progress:
        progress(status)
