"""Model bundles: a folder that describes and verifies itself.

Files: ``model.safetensors`` (fp16 weights), ``card.json`` (what the model is, its classes, input spec,
threshold, provenance and the sha256 of every other file), ``metrics.json``, ``predictions.csv`` (test split),
``val_predictions.csv``, ``split.csv``, ``train_log.csv`` and ``ood.safetensors``; audits add files and
``metrics.json`` entries through :func:`update`. :func:`load_bundle` refuses a bundle whose files do not match
their recorded sha256.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from leukoview.models.card import WEIGHTS, Card, CardError
from leukoview.models.card import migrate as migrate_raw
from leukoview.primitives import settings

if TYPE_CHECKING:  # pandas loads on first use: Home renders without it (cold start)
    import pandas as pd

FORMAT = "leukoview-bundle/1"
CARD = "card.json"
METRICS = "metrics.json"
PREDICTIONS = "predictions.csv"
VAL_PREDICTIONS = "val_predictions.csv"
SPLIT = "split.csv"
OOD = "ood.safetensors"
WRONG_TASK, WRONG_TASK_INFO = "wrong_task.safetensors", "wrong_task.json"  # see leukoview.audits.wrongtask
PALETTE, PALETTE_INFO = "palette.safetensors", "palette.json"  # see leukoview.audits.palette
LOG = "train_log.csv"
CAM_STATS = "cam_stats.json"  # see leukoview.audits.camstats
LATENCY = "latency.json"  # see leukoview.audits.latency
SEEN = "seen.json"  # see leukoview.models.seen


class BundleError(ValueError):
    """A bundle folder is missing, incomplete, or fails verification."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: Path, obj) -> None:
    """Atomic JSON write (temporary file + rename), so a crash never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_weights(model, path: Path) -> None:
    """Floating-point tensors as fp16 (halves the size; the loss is far below what the metrics resolve)."""
    from safetensors.torch import save_file

    state = {k: (v.detach().to("cpu").half() if v.is_floating_point() else v.detach().to("cpu")).contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(path))


def card_digest(card: dict) -> str:
    """sha256 of the card's canonical JSON without its own digest field (detects edits to the card)."""
    body = {k: v for k, v in card.items() if k != "card_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=_json_default).encode()).hexdigest()


def finalize(folder: Path, card: dict) -> dict:
    """Record the sha256 of every bundle file, and of the card itself, in the card and write it."""
    files = {}
    for name in sorted(os.listdir(folder)):
        if name != CARD and (folder / name).is_file() and not name.endswith(".tmp"):
            files[name] = sha256_file(folder / name)
    card = {k: v for k, v in card.items() if k != "card_sha256"}
    card = {**card, "format": FORMAT, "files": files}
    card["card_sha256"] = card_digest(json.loads(json.dumps(card, default=_json_default)))
    write_json(folder / CARD, card)
    return card


def update(folder: Path | str, *, metrics: dict | None = None, files: dict[str, object] | None = None) -> dict:
    """The one writer of additions to a written bundle, used by every audit (shift test, OOD evaluation, Grad-CAM
    statistics, latency, wrong-task detector): merge ``metrics`` entries into ``metrics.json``, write each of
    ``files`` (name -> JSON object, or bytes written as they are, e.g. a safetensors file), then re-record the
    sha256 of every file in the card. The bundle is verified first, so an audit never re-blesses a file that was
    changed behind the card's back. Returns the new card."""
    b = load_bundle(folder)
    if metrics:
        merged = json.loads((b.path / METRICS).read_text())
        merged.update(metrics)
        write_json(b.path / METRICS, merged)
    for name, obj in (files or {}).items():
        if name == CARD or Path(name).name != name:
            raise BundleError(f"{name!r}: an audit may add plain files next to the card, not the card itself")
        if isinstance(obj, bytes):
            (b.path / name).write_bytes(obj)
        else:
            write_json(b.path / name, obj)
    return finalize(b.path, {k: v for k, v in b.card.raw.items() if k not in ("files", "format")})


def migrate_card(folder: Path | str) -> bool:
    """Rewrite an older bundle's card at this leukoview's card version (the bundle is verified first; no other
    file changes). Returns whether the card changed."""
    b = load_bundle(folder)
    new = migrate_raw(b.card.raw)
    if new == b.card.raw:
        return False
    finalize(b.path, {k: v for k, v in new.items() if k not in ("files", "format", "card_sha256")})
    return True


@dataclass
class Bundle:
    """A verified bundle folder and its typed card. Heavy parts (network, predictions) load on first use."""

    path: Path
    card: Card

    @property
    def id(self) -> str:
        return self.card.id

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    @property
    def positive(self) -> list[str]:
        return list(self.card.positive)

    @property
    def threshold(self) -> float:
        return self.card.threshold

    @property
    def task(self) -> str:
        return self.card.task

    @cached_property
    def metrics(self) -> dict:
        return json.loads((self.path / METRICS).read_text())

    def predictions(self, split: str = "test") -> pd.DataFrame:
        import pandas as pd

        return pd.read_csv(self.path / (PREDICTIONS if split == "test" else VAL_PREDICTIONS),
                           keep_default_na=False)

    def split(self) -> pd.DataFrame:
        import pandas as pd

        return pd.read_csv(self.path / SPLIT, keep_default_na=False, dtype={"patient": str})

    @property
    def is_network(self) -> bool:
        """False for classical models (no network: no Grad-CAM, no ONNX)."""
        return self.card.is_network

    def build_model(self):
        """The network with the bundle's weights, in eval mode, on CPU (float32)."""
        from safetensors.torch import load_file

        if not self.is_network:
            raise BundleError(f"{self.path}: a classical model ({self.card.architecture}) has no network")

        from leukoview.models.archs import get_arch

        model, _ = get_arch(self.card.architecture).build(len(self.classes), pretrained=False)
        try:
            state = load_file(str(self.path / WEIGHTS))
        except Exception as e:  # safetensors' own error types: a damaged or foreign file
            raise BundleError(f"{self.path}: {WEIGHTS} is not a readable safetensors file ({e})") from None
        reference = model.state_dict()
        missing = sorted(set(reference) - set(state))
        unexpected = sorted(set(state) - set(reference))
        if missing or unexpected:
            raise BundleError(f"{self.path}: weights do not fit {self.card.architecture} "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        wrong = [k for k, v in state.items() if v.shape != reference[k].shape]
        if wrong:
            raise BundleError(f"{self.path}: weights do not fit {self.card.architecture} (shape of {wrong[:3]})")
        state = {k: v.to(reference[k].dtype) for k, v in state.items()}
        model.load_state_dict(state, strict=True)
        return model.eval()

    def json_file(self, name: str, default=None):
        """A JSON file an audit added to the bundle (recorded in the card), or ``default`` when there is none."""
        path = self.path / name
        if not self.card.has_file(name) or not path.is_file():
            return default
        return json.loads(path.read_text())

    def ood_state(self) -> dict | None:
        if not (self.path / OOD).is_file():
            return None
        from safetensors.numpy import load_file

        return load_file(str(self.path / OOD))

    def wrong_task(self) -> tuple[dict, float] | None:
        """The wrong-task detector's arrays and flag threshold (:mod:`leukoview.audits.wrongtask`), or None."""
        info = self.json_file(WRONG_TASK_INFO)
        if not info or not self.card.has_file(WRONG_TASK):
            return None
        from safetensors.numpy import load_file

        return load_file(str(self.path / WRONG_TASK)), float(info["threshold"])

    def palette(self) -> tuple[dict, float] | None:
        """The palette check's reference and flag threshold (:mod:`leukoview.audits.palette`), or None."""
        info = self.json_file(PALETTE_INFO)
        if not info or not self.card.has_file(PALETTE):
            return None
        from safetensors.numpy import load_file

        return load_file(str(self.path / PALETTE)), float(info["threshold"])


def load_bundle(path: Path | str, *, verify: bool = True) -> Bundle:
    """Read a bundle folder; with ``verify`` every file listed in the card must match its sha256."""
    path = Path(path)
    if not (path / CARD).is_file():
        raise BundleError(f"{path}: not a model bundle (no {CARD})")
    try:
        card = json.loads((path / CARD).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError(f"{path / CARD}: card is not valid JSON ({e})") from None
    if not isinstance(card, dict):
        raise BundleError(f"{path / CARD}: card is not a JSON object")
    if card.get("format") != FORMAT:
        raise BundleError(f"{path}: bundle format {card.get('format')!r}, this leukoview reads {FORMAT!r}")
    try:
        typed = Card.from_dict(card)
    except CardError as e:
        raise BundleError(f"{path / CARD}: {e}") from None
    if verify and card.get("card_sha256") != card_digest(card):
        raise BundleError(f"{path / CARD}: the card was edited after the bundle was written (its card_sha256 does "
                          "not match its content); refusing to use it")
    if verify:
        for name, digest in typed.files.items():
            f = path / name
            if not f.is_file():
                raise BundleError(f"{path}: {name} is missing")
            actual = sha256_file(f)
            if actual != digest:
                raise BundleError(f"{path}: {name} does not match the sha256 in its card (expected "
                                  f"{digest[:12]}…, found {actual[:12]}…): the file was changed or damaged; "
                                  "refusing to use it")
    return Bundle(path, typed)


def list_bundles(models_dir: Path | None = None, *, verify: bool = False) -> list[Bundle]:
    """Every bundle folder in the models directory (sorted by id). Broken folders are skipped; see
    :func:`bundle_problems` to list them."""
    out = []
    for folder in sorted((models_dir or settings.models_dir()).glob("*/")):
        try:
            out.append(load_bundle(folder, verify=verify))
        except BundleError:
            continue
    return out


def bundle_problems(models_dir: Path | None = None) -> dict[str, str]:
    """Folders in the models directory that are not usable bundles, with the reason."""
    problems = {}
    for folder in sorted((models_dir or settings.models_dir()).glob("*/")):
        try:
            load_bundle(folder, verify=True)
        except BundleError as e:
            problems[folder.name] = str(e)
    return problems
