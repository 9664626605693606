import json
import shutil

import numpy as np
import pytest

from leukoview.models import bundle as B


def test_tiny_bundle_has_every_file_and_card_field(tiny_bundle):
    b = B.load_bundle(tiny_bundle)
    for name in (B.WEIGHTS, B.METRICS, B.PREDICTIONS, B.VAL_PREDICTIONS, B.SPLIT, B.OOD, B.LOG):
        assert (tiny_bundle / name).is_file() and name in b.card.files
    card = b.card.raw  # the JSON as written
    assert b.card.version == 2 and b.card.intended_use
    assert card["classes"] == ["blast", "normal"] and card["positive_classes"] == ["blast"]
    assert card["imagenet_initialised"] is False and "scratch" in card["pretrained_source"]
    assert card["input"]["size"] == 64 and 0 < card["threshold"] < 1
    assert card["split"]["hash"] and card["training"]["wall_time_s"] > 0 and card["versions"]["torch"]
    assert card["weights_dtype"] == "float16" and card["parameters"] > 0


def test_metrics_agree_with_the_stored_predictions(tiny_bundle):
    from leukoview.primitives import metrics as M

    b = B.load_bundle(tiny_bundle)
    pred = b.predictions()
    m = b.metrics
    assert m["n_images"] == len(pred)
    assert m["roc_auc"] == pytest.approx(M.roc_auc(pred["positive"], pred["suspicion"]))
    c = M.confusion_at(pred["positive"], pred["suspicion"], b.threshold)
    assert m["at_threshold"]["tp"] == c.tp and m["at_threshold"]["fp"] == c.fp
    lo, hi = m["sensitivity_ci95"]
    p, n_pos = m["at_threshold"]["sensitivity"], int(pred["positive"].sum())
    if p in (0.0, 1.0):  # no resample can move an all-right (or all-wrong) sensitivity
        assert lo == hi == p
    else:  # a percentile bootstrap is about as wide as the binomial interval (not (0, 1), not a point)
        normal = 2 * 1.96 * (p * (1 - p) / n_pos) ** 0.5
        assert 0.4 * normal < hi - lo < 2.5 * normal


def test_split_file_has_no_group_across_splits(tiny_bundle):
    split = B.load_bundle(tiny_bundle).split()
    assert (split.groupby("group")["split"].nunique() == 1).all()
    assert set(split["split"]) == {"train", "val", "test"}


def test_round_trip_weights_reproduce_outputs(tiny_bundle):
    import torch

    b = B.load_bundle(tiny_bundle)
    m1, m2 = b.build_model(), b.build_model()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(m1(x), m2(x))
    assert all(p.dtype == torch.float32 for p in m1.parameters())


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(tiny_bundle, dst)
    return dst


def test_tampered_weights_are_refused(bundle_copy):
    data = bytearray((bundle_copy / B.WEIGHTS).read_bytes())
    data[-10] ^= 0xFF
    (bundle_copy / B.WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(B.BundleError, match="does not match the sha256"):
        B.load_bundle(bundle_copy)


def test_truncated_weights_are_refused(bundle_copy):
    data = (bundle_copy / B.WEIGHTS).read_bytes()
    (bundle_copy / B.WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(B.BundleError, match="model.safetensors does not match"):
        B.load_bundle(bundle_copy)


def test_edited_predictions_are_refused(bundle_copy):
    with open(bundle_copy / B.PREDICTIONS, "a") as f:
        f.write("x\n")
    with pytest.raises(B.BundleError, match="predictions.csv"):
        B.load_bundle(bundle_copy)


def test_missing_or_broken_card_is_refused(bundle_copy, tmp_path):
    with pytest.raises(B.BundleError, match="not a model bundle"):
        B.load_bundle(tmp_path / "nothing")
    (bundle_copy / B.CARD).write_text("{not json")
    with pytest.raises(B.BundleError, match="not valid JSON"):
        B.load_bundle(bundle_copy)
    (bundle_copy / B.CARD).write_text(json.dumps({"format": B.FORMAT}))
    with pytest.raises(B.BundleError, match="does not fit card.schema.json"):
        B.load_bundle(bundle_copy)


def test_list_bundles_skips_and_reports_broken_folders(tiny_bundle, tmp_path):
    shutil.copytree(tiny_bundle, tmp_path / "good")
    (tmp_path / "broken").mkdir()
    assert [b.path.name for b in B.list_bundles(tmp_path)] == ["good"]
    assert "broken" in B.bundle_problems(tmp_path)


def test_ood_state_loads_as_arrays(tiny_bundle):
    state = B.load_bundle(tiny_bundle).ood_state()
    assert state["precision"].shape[0] == state["components"].shape[0]
    assert np.isfinite(state["class_means"]).all()


def test_reevaluate_reproduces_the_bundle(tiny_bundle, tmp_path):
    from leukoview.jobs.train import reevaluate

    dst = tmp_path / "again"
    shutil.copytree(tiny_bundle, dst)
    before = B.load_bundle(dst)
    reevaluate(dst, progress=False)
    after = B.load_bundle(dst)
    assert after.threshold == pytest.approx(before.threshold, abs=1e-6)
    assert after.card.split_hash == before.card.split_hash
    assert after.card.files[B.WEIGHTS] == before.card.files[B.WEIGHTS]  # fp16 round trip is stable
    np.testing.assert_allclose(after.predictions()["suspicion"], before.predictions()["suspicion"], atol=1e-5)


def test_selected_epoch_matches_the_kept_weights_rule():
    from leukoview.jobs.bundle_writer import selected_epoch

    log = [{"epoch": 1, "val_nll_calibrated": 0.5}, {"epoch": 2, "val_nll_calibrated": 2e-10},
           {"epoch": 3, "val_nll_calibrated": 0.0}, {"epoch": 4, "val_nll_calibrated": 0.1}]
    assert selected_epoch(log) == 2  # epoch 3 improves by less than the 1e-5 tolerance: not kept


def test_edited_card_is_refused(bundle_copy):
    card = json.loads((bundle_copy / B.CARD).read_text())
    card["threshold"] = 0.01  # a quietly lowered operating threshold
    (bundle_copy / B.CARD).write_text(json.dumps(card))
    with pytest.raises(B.BundleError, match="card was edited"):
        B.load_bundle(bundle_copy)


def test_update_adds_metrics_and_files_and_the_bundle_still_verifies(bundle_copy):
    B.update(bundle_copy, metrics={"shift": {"images": 3}}, files={"extra.json": {"a": 1}})
    b = B.load_bundle(bundle_copy)
    assert b.metrics["shift"] == {"images": 3} and "accuracy" in b.metrics  # merged, not replaced
    assert "extra.json" in b.card.files
    with pytest.raises(B.BundleError, match="not the card itself"):
        B.update(bundle_copy, files={"card.json": {}})


def test_update_refuses_a_bundle_changed_behind_its_card(bundle_copy):
    (bundle_copy / B.PREDICTIONS).write_text("file,label\n")
    with pytest.raises(B.BundleError, match="does not match the sha256"):
        B.update(bundle_copy, metrics={"shift": {}})
