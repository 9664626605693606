"""Every bundle shipped in models/ (no data needed): verifies, and its card agrees with what it holds."""
from __future__ import annotations

import numpy as np
import pytest

from leukoview.models import archs
from leukoview.models.bundle import list_bundles, load_bundle
from tests.conftest import REPO

SHIPPED = list_bundles(REPO / "models")


def test_models_are_shipped():
    assert len(SHIPPED) >= 2


@pytest.mark.parametrize("bundle", SHIPPED, ids=[b.id for b in SHIPPED])
def test_shipped_card_agrees_with_its_model(bundle):
    b = load_bundle(bundle.path)  # every sha256, the card's own included
    card = b.card
    assert card.id == bundle.path.name
    assert card.training["wall_time_s"] > 0
    assert card.has_file("latency.json"), "measure it: python -m leukoview measure " + str(bundle.path)
    pred = b.predictions()
    assert len(pred) == b.metrics["n_images"]
    if b.is_network:
        spec = archs.get_arch(card.architecture)
        model = b.build_model()  # strict load: every tensor of the registry's network, nothing else
        assert archs.count_parameters(model) == card.get("parameters")
        assert card.cam_layer == spec.cam_layer and card.classifier == spec.classifier
        assert model.get_submodule(spec.classifier).out_features == len(b.classes)
        assert card.imagenet_initialised == ("ImageNet" in card.pretrained_source)
    else:
        from leukoview.models.classical import FEATURE_SETS, ClassicalModel, decision

        assert card.input["features"] in FEATURE_SETS
        cm = ClassicalModel(b.path, card)
        z = np.zeros((3, cm.arrays["scaler_mean"].shape[0]), np.float32)
        logits = decision(cm.kind, cm.arrays, z, xgb_json=cm.xgb_json, n_classes=len(b.classes))
        assert logits.shape == (3, len(b.classes)) and np.isfinite(logits).all()


def test_all4_bundles_share_one_split():
    """The model zoo compares architectures on the same leakage-aware split."""
    hashes = {b.id: b.card.split_hash for b in SHIPPED if b.task == "all4"}
    assert len(set(hashes.values())) == 1, hashes


def test_every_task_registry_choice_is_a_shipped_bundle_of_that_task():
    """A task's recommended bundle (the one reviewers get first) must exist in models/ and be of that task."""
    from leukoview.primitives.tasks import TASKS

    shipped = {b.id: b for b in SHIPPED}
    for task in TASKS.values():
        if task.recommended:
            assert task.recommended in shipped, f"{task.name}: {task.recommended} is not in models/"
            assert shipped[task.recommended].task == task.name


WITH_PALETTE = [b for b in SHIPPED if b.palette() is not None]


@pytest.mark.parametrize("bundle", WITH_PALETTE, ids=[b.id for b in WITH_PALETTE])
def test_palette_bundles_give_no_verdict_on_pictures_the_gate_lets_through(bundle):
    """The bundles that carry a palette check (their own flags let held-out pictures through): matplotlib photo
    crops and charts that pass the input gate (drawn with another seed than oodeval's) are all flagged, live."""
    from leukoview.jobs.predict import Predictor
    from leukoview.primitives.pictures import held_out_non_cells
    from leukoview.primitives.segment import smear_gate

    pictures = [im for ims in held_out_non_cells(24, seed=11).values() for im in ims if not smear_gate(im)]
    assert len(pictures) >= 5  # the gate alone does not refuse them all: the check has work to do
    assert Predictor(bundle.path).predict_batch(pictures)["ood_flag"].all()
