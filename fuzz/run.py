"""Coverage-guided fuzzing of one entry point with atheris, for a fixed time; a crash is written to
fuzz/crashes/<target>/ and becomes a regression test (tests/test_fuzz.py reads that folder).

    python fuzz/run.py image --seconds 600      # image | zip | card | weights | decisions
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import atheris

    ap = argparse.ArgumentParser()
    ap.add_argument("target", choices=["image", "zip", "card", "weights", "decisions"])
    ap.add_argument("--seconds", type=int, default=600)
    a = ap.parse_args()
    with atheris.instrument_imports(include=["leukoview", "PIL", "zipfile", "json", "safetensors", "csv"]):
        import leukoview.app.batch
        import leukoview.app.decisions_import
        import leukoview.models.bundle
        import leukoview.models.card
        import leukoview.primitives.images
        import leukoview.primitives.segment  # noqa: F401 (imported here so that their code is instrumented for coverage)
        from fuzz import targets
    crashes = Path(__file__).resolve().parent / "crashes" / a.target
    crashes.mkdir(parents=True, exist_ok=True)
    work = Path(__file__).resolve().parent / ".work" / a.target
    work.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(targets.seeds(a.target)):
        (work / f"seed{i}").write_bytes(seed)
    fn = targets.TARGETS[a.target]
    atheris.Setup([sys.argv[0], str(work), f"-max_total_time={a.seconds}", f"-artifact_prefix={crashes}/",
                   "-rss_limit_mb=4096", "-max_len=2000000"], fn)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
