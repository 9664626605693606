"""Fuzz targets: every entry point that takes a user's bytes. Each ``target(data)`` may refuse the bytes only with
the project's clean refusals (a clear message); anything else is a crash.

- ``image``: image decoding (leukoview.primitives.images.load_image) and the input gate
(leukoview.primitives.segment.smear_gate)
- ``zip``: a zip upload (leukoview.app.batch.extract_zip)
- ``card``: a bundle's card.json (leukoview.models.bundle.load_bundle)
- ``weights``: a bundle's model.safetensors (leukoview.models.bundle.Bundle.build_model)
- ``decisions``: a decisions CSV imported on the batch page (leukoview.app.decisions_import.plan)
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

SEEDS = Path(__file__).resolve().parent / "corpus"


def _clean():
    from leukoview.app.batch import BoundaryError
    from leukoview.app.decisions_import import DecisionsCSVError
    from leukoview.models.bundle import BundleError
    from leukoview.primitives.images import ImageError

    return (ImageError, BoundaryError, BundleError, DecisionsCSVError)


def image(data: bytes) -> None:
    from leukoview.primitives.images import load_image
    from leukoview.primitives.segment import smear_gate

    try:
        img = load_image(data, name="fuzz")
    except _clean():
        return
    smear_gate(img)


def zip_upload(data: bytes) -> None:
    from leukoview.app.batch import extract_zip

    with tempfile.TemporaryDirectory() as tmp:
        try:
            extract_zip(data, Path(tmp) / "out", max_files=200, max_bytes=20 * 2**20)
        except _clean():
            return


_BUNDLE: Path | None = None


def _tiny_bundle() -> Path:
    """A valid bundle to put fuzzed files into (the seed corpus's own, built once per process)."""
    global _BUNDLE
    if _BUNDLE is None:
        _BUNDLE = Path(tempfile.mkdtemp(prefix="fuzz-bundle-"))
        shutil.copytree(SEEDS / "bundle", _BUNDLE, dirs_exist_ok=True)
    return _BUNDLE


def card(data: bytes) -> None:
    from leukoview.models.bundle import CARD, load_bundle

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "b"
        shutil.copytree(_tiny_bundle(), folder)
        (folder / CARD).write_bytes(data)
        try:
            load_bundle(folder)
        except _clean():
            return


def weights(data: bytes) -> None:
    from leukoview.models.bundle import WEIGHTS, load_bundle

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "b"
        shutil.copytree(_tiny_bundle(), folder)
        (folder / WEIGHTS).write_bytes(data)
        try:
            load_bundle(folder, verify=False).build_model()  # past the sha256 check: the parser itself
        except _clean():
            return


class ImportBatch:
    """The part of a scored batch that an import reads: four cells of a two-class model "m1"."""
    model, classes, batch = "m1", ("normal", "blast"), "/data::slide"

    def __init__(self):
        import pandas as pd

        self._cells = pd.DataFrame({"file": ["a.png", "b.png", "c.png", "d.png"],
                                    "predicted": ["blast", "normal", "normal", "normal"],
                                    "suspicion": [0.9, 0.2, 0.1, 0.1]})

    def cells(self):
        return self._cells

    def decide(self, row, action, label="", *, reviewer, comment=""):
        from leukoview.app.gallery import decision_label
        from leukoview.app.review import Decision

        return Decision(batch=self.batch, file=row["file"], action=action, reviewer=reviewer,
                        label=decision_label(action, row, label), comment=comment, model=self.model,
                        suspicion=float(row["suspicion"]))


def decisions(data: bytes) -> None:
    from leukoview.app.decisions_import import plan

    try:
        plan(data, ImportBatch(), reviewer="fuzz", source="fuzz.csv", decided={"d.png"})
    except _clean():
        return


TARGETS = {"image": image, "zip": zip_upload, "card": card, "weights": weights, "decisions": decisions}


def seeds(name: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((SEEDS / name).glob("*")) if p.is_file()]


def mutate(data: bytes, rng) -> bytes:
    """A simple mutation (byte flips, a cut, a splice of itself): for the suite's short deterministic run; the
    long run uses atheris' coverage-guided mutator."""
    b = bytearray(data or b"\0")
    kind = rng.integers(4)
    if kind == 0:
        for _ in range(int(rng.integers(1, 8))):
            b[int(rng.integers(len(b)))] = int(rng.integers(256))
    elif kind == 1:
        b = b[: int(rng.integers(len(b) + 1))]
    elif kind == 2:
        i = int(rng.integers(len(b) + 1))
        b = b[:i] + bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype="uint8")) + b[i:]
    else:
        i, j = sorted(int(x) for x in rng.integers(0, len(b) + 1, 2))
        b = b[:i] + b[j:] + b[i:j]
    return bytes(b)


def describe() -> str:
    return json.dumps({k: len(seeds(k)) for k in TARGETS})
