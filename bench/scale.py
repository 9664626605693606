"""The Ray engine against the local engine on this machine, and what N nodes would give.

    LEUKOVIEW_DATA_ROOT=../shared/data python -m bench.scale [--n 5000] [--actors 2] [--memory-n 50000]
        [--out bench/last_run_scale.md]

Rows: images/s of ``score`` with the local engine and with the Ray engine (a local Ray, ``--actors`` actors), on the
same ``--n`` real images (wbc9 + DeepAPL cells, in the local engine's order); the driver's peak resident memory
(VmHWM of a fresh process: peak RSS is inherited across exec) while the Ray engine takes ``--memory-n`` paths (the
list repeated; only paths travel, and the run stops after its first batches: the list and the dataset plan are what
a long run adds to the driver); and a paper model of N nodes from the measured per-image cost.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    import ray

    from leukoview.app import scale
    from leukoview.jobs.predict import Predictor, score_files
    from leukoview.primitives import settings
    from leukoview.primitives.images import find_images
    from leukoview.primitives.tasks import recommended_for

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=str(REPO / "models" / recommended_for("wbc9")))
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--memory-n", dest="memory_n", type=int, default=50000)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    root = settings.data_root()
    paths = (find_images(root / "wbc5") + find_images(root / "pbc_extra") + find_images(root / "deepapl"))[: a.n]
    t0 = time.perf_counter()
    score_files(paths, Predictor(a.bundle), base=root)
    local = len(paths) / (time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        ray.init(num_cpus=a.actors, include_dashboard=False, log_to_driver=False)
        t0 = time.perf_counter()
        scale.score_ray(root, a.bundle, Path(tmp) / "ray.csv", actors=a.actors, paths=paths)
        ray_rate = len(paths) / (time.perf_counter() - t0)
        ray.shutdown()
        # the driver alone (a fresh process: this one holds the local engine's model), on memory_n paths
        import subprocess
        import sys

        hwm = "[int(x.split()[1]) / 1024 for x in open('/proc/self/status') if x.startswith('VmHWM')][0]"
        code = ("import sys; from pathlib import Path; from leukoview import scale, settings; "
                "from leukoview.primitives.images import find_images; root = settings.data_root(); "
                "p = find_images(root / 'wbc5') + find_images(root / 'pbc_extra') + find_images(root / 'deepapl'); "
                f"many = (p * ({a.memory_n} // len(p) + 1))[:{a.memory_n}]; "
                f"before = {hwm}\n"
                "try:\n"
                f"    scale.score_ray(root, {a.bundle!r}, Path({tmp!r}) / 'many.csv', actors={a.actors}, paths=many, "
                "stop_after=2)\n"
                "except KeyboardInterrupt:\n    pass\n"
                f"print('MEM', before, {hwm})")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
        mem = next((ln for ln in out.stdout.splitlines() if ln.startswith("MEM ")), "")
        if not mem:
            raise RuntimeError(f"the memory run printed no figure: {out.stdout[-500:]} {out.stderr[-1500:]}")
        before, peak = map(float, mem.split()[1:3])
    per_actor = ray_rate / a.actors
    lines = [f"# Ray engine vs local engine ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, "
             f"{Path(a.bundle).name})", "", "`python -m bench.scale`", "", "| row | figure | target |", "|---|---|---|",
             f"| local engine, {len(paths)} images | {local:.1f} images/s | |",
             f"| Ray engine, {a.actors} actors, same images | {ray_rate:.1f} images/s "
             f"({ray_rate / local:.2f}x local) | >= 0.9x local |",
             f"| driver peak memory, {a.memory_n} paths | {peak:.0f} MB (before the {a.memory_n}-path run: "
             f"{before:.0f} MB) | <= 1024 MB |", "",
             f"Paper model: {per_actor:.1f} images/s per actor (one CPU each, this run's cost including Ray's). A "
             "cluster of N nodes with c cores each runs about N x c actors: "
             + ", ".join(f"{n} x 16 cores ≈ {n * 16 * per_actor:,.0f} images/s ({n * 16 * per_actor * 3600:,.0f} "
                         "an hour)" for n in (1, 4, 16))
             + "; the driver writes one part per batch of 64, so it is not the limit below ~10,000 images/s.", ""]
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
