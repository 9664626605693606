"""The bundle card: what a model is, typed. Read from ``card.json`` once (:meth:`Card.from_dict`), migrated from
older versions and checked against ``card.schema.json``; every reader uses its fields, never the JSON keys.

The card's JSON (``Card.raw``) is what the bundle's ``card_sha256`` covers, so it is kept as written; the typed
fields resolve the fallbacks once (an old card without ``kind`` is a network, without ``cam_layer`` takes its
architecture's, without ``version``/``intended_use`` gets the defaults below).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

VERSION = 2  # 1: cards written before the schema (no version, no intended_use); 2: this module's
SCHEMA_FILE = Path(__file__).with_name("card.schema.json")
INTENDED_USE = ("Research and education: a second reader that pre-classifies cells for a qualified reviewer. Not a "
                "medical device; every decision is a reviewer's.")
KINDS = ("network", "classical")
WEIGHTS = "model.safetensors"  # the bundle's weights file (leukoview.models.bundle.WEIGHTS), required by the schema


class CardError(ValueError):
    """A card does not fit the schema (the message names the first problem)."""


@cache
def schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text())


def problems(raw: dict) -> list[str]:
    """Where ``raw`` (a card's JSON, migrated) breaks the schema; empty when it fits."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    found = [f"{'/'.join(map(str, e.absolute_path)) or '(card)'}: {e.message}"
             for e in sorted(validator.iter_errors(raw), key=lambda e: list(map(str, e.absolute_path)))]
    if not found and not set(raw["positive_classes"]) <= set(raw["classes"]):
        found.append(f"positive_classes: {sorted(set(raw['positive_classes']) - set(raw['classes']))} are not "
                     "among the classes")
    return found


def migrate(raw: dict) -> dict:
    """A card of any earlier version as this version's JSON (a new dict; the stored file is not touched)."""
    out = dict(raw)
    out.setdefault("kind", "network")
    out.setdefault("version", VERSION)
    out.setdefault("intended_use", INTENDED_USE)
    if out["kind"] == "network" and not (out.get("cam_layer") and out.get("classifier")):
        from leukoview.models.archs import get_arch

        try:
            arch = get_arch(out["architecture"])
        except (KeyError, ValueError):
            return out  # an architecture this leukoview does not know: building the network will say so
        out["cam_layer"] = out.get("cam_layer") or arch.cam_layer
        out["classifier"] = out.get("classifier") or arch.classifier
    return out


@dataclass(frozen=True)
class Card:
    """A bundle's card with its fallbacks resolved. ``raw`` is the JSON as stored (hashed by the bundle)."""

    id: str
    task: str
    architecture: str
    kind: str
    classes: tuple[str, ...]
    positive: tuple[str, ...]
    input: dict
    threshold: float
    files: dict[str, str]
    dataset: dict
    version: int = VERSION
    intended_use: str = INTENDED_USE
    temperature: float = 1.0
    threshold_rule: str = ""
    ood: dict = field(default_factory=dict)
    classifier: str = ""
    cam_layer: str = ""
    architecture_description: str = ""
    imagenet_initialised: bool = False
    pretrained_source: str = ""
    split: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    head: dict | None = None
    fine_tuned_from: dict | None = None
    adapted: dict | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, raw: dict, *, check: bool = True) -> Card:
        """The typed card of a card's JSON: migrated, then (``check``) validated against the schema."""
        m = migrate(raw)
        if check:
            found = problems(m)
            if found:
                raise CardError(f"card of {raw.get('id', '?')!r} does not fit {SCHEMA_FILE.name}: {found[0]}"
                                + (f" (and {len(found) - 1} more)" if len(found) > 1 else ""))
        return cls(id=m["id"], task=str(m.get("task", "")), architecture=m["architecture"], kind=m["kind"],
                   classes=tuple(m["classes"]), positive=tuple(m["positive_classes"]), input=m["input"],
                   threshold=float(m["threshold"]), files=dict(m["files"]), dataset=m["dataset"],
                   version=int(m["version"]), intended_use=m["intended_use"],
                   temperature=float(m.get("temperature", 1.0)), threshold_rule=m.get("threshold_rule", ""),
                   ood=m.get("ood", {}), classifier=m.get("classifier", ""), cam_layer=m.get("cam_layer") or "",
                   architecture_description=m.get("architecture_description", ""),
                   imagenet_initialised=bool(m.get("imagenet_initialised", False)),
                   pretrained_source=m.get("pretrained_source", ""), split=m.get("split", {}),
                   training=m.get("training", {}), head=m.get("head"), fine_tuned_from=m.get("fine_tuned_from"),
                   adapted=m.get("adapted"), raw=raw)

    @property
    def is_network(self) -> bool:
        """False for classical models (no network: no Grad-CAM, no ONNX)."""
        return self.kind == "network"

    @property
    def weights_sha256(self) -> str:
        return self.files.get(WEIGHTS, "")

    @property
    def split_hash(self) -> str:
        return self.split.get("hash", "")

    @property
    def config(self) -> dict:
        """The training config the model was made with ({} when the card records none)."""
        return self.training.get("config", {})

    @property
    def ood_threshold(self) -> float:
        return float(self.ood.get("threshold", float("inf")))

    def has_file(self, name: str) -> bool:
        return name in self.files

    def get(self, key: str, default: Any = None) -> Any:
        """A key of the stored JSON that has no typed field (e.g. ``versions``); typed fields are attributes."""
        if key in {f for f in self.__dataclass_fields__ if f != "raw"}:
            raise AttributeError(f"card.{key} is a typed field: read it as an attribute")
        return self.raw.get(key, default)
