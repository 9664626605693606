"""The typed card: one schema, migration of older cards, every shipped card fits."""
import json
from pathlib import Path

import pytest

from leukoview.models import card as C
from leukoview.models.bundle import BundleError, finalize, load_bundle, migrate_card

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.mark.parametrize("folder", sorted(p for p in MODELS.iterdir() if (p / "card.json").is_file()),
                         ids=lambda p: p.name)
def test_every_shipped_card_fits_the_schema_as_stored(folder):
    raw = json.loads((folder / "card.json").read_text())
    assert C.problems(raw) == []  # as stored, not only after migration
    assert raw["version"] == C.VERSION and C.migrate(raw) == raw


def test_an_old_card_migrates_on_read_and_on_disk(tiny_bundle, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(tiny_bundle, old)
    raw = json.loads((old / "card.json").read_text())
    for key in ("version", "intended_use", "kind", "cam_layer", "classifier"):
        raw.pop(key, None)
    finalize(old, {k: v for k, v in raw.items() if k not in ("files", "format", "card_sha256")})
    assert C.problems(json.loads((old / "card.json").read_text()))  # version 1 does not fit as stored
    b = load_bundle(old)  # ... but reads: migrated on read
    assert b.card.version == C.VERSION and b.card.kind == "network" and b.card.cam_layer and b.card.classifier
    assert b.card.cam_layer == load_bundle(tiny_bundle).card.cam_layer
    assert migrate_card(old) and not migrate_card(old)  # rewritten once, then current
    assert C.problems(json.loads((old / "card.json").read_text())) == []


@pytest.mark.parametrize("change, where", [
    ({"threshold": 1.5}, "threshold"), ({"kind": "magic"}, "kind"), ({"classes": ["only"]}, "classes"),
    ({"positive_classes": ["zebra"]}, "positive_classes"), ({"id": "../escape"}, "id")])
def test_the_schema_refuses_a_card_that_breaks_it(tiny_bundle, tmp_path, change, where):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    raw = json.loads((bad / "card.json").read_text())
    finalize(bad, {**{k: v for k, v in raw.items() if k not in ("files", "format", "card_sha256")}, **change})
    with pytest.raises(BundleError, match=where):
        load_bundle(bad)


def test_typed_fields_are_read_as_attributes_not_keys(tiny_bundle):
    c = load_bundle(tiny_bundle).card
    with pytest.raises(AttributeError, match="typed field"):
        c.get("task")
    assert c.get("versions")["torch"]  # keys without a typed field stay readable
    assert c.weights_sha256 == c.files["model.safetensors"] and len(c.weights_sha256) == 64
