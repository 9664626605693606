import pytest

from leukoview.app import advice, compare, landing
from leukoview.audits import latency
from leukoview.models.bundle import load_bundle


def test_risk_bands():
    assert advice.risk_band(0.1, 0.3) == "low"
    assert advice.risk_band(0.5, 0.3) == "borderline"
    assert advice.risk_band(0.95, 0.3) == "high"
    assert advice.risk_band(0.95, 0.97) == "low"


def test_out_of_distribution_gets_no_verdict_either_way():
    for score in (0.01, 0.5, 0.95):  # low, borderline, high: none of them is read out
        r = advice.read_prediction(score, 0.3, "blast", ["blast"], ood=True, task_positive_name="B-ALL")
        assert r.band == "cannot assess" and r.headline.startswith("Cannot assess")
        assert "out-of-distribution" in r.limitations[0] and "not a medical device" in " ".join(r.limitations)
        assert not any("Routine review" in s for s in r.next_steps)
    assert advice.read_prediction(0.01, 0.3, "normal", ["blast"], ood=False).band == "low"


def test_home_tables_come_from_the_card_and_metrics(tiny_bundle):
    b = load_bundle(tiny_bundle)
    t = landing.models_table([b])
    assert t.loc[0, "model"] == b.id and t.loc[0, "accuracy"].startswith(f"{b.metrics['accuracy']:.4f}")
    assert "scratch" in landing.model_summary(b) and b.card.split_hash in landing.split_summary(b)


def test_comparison_table_and_mcnemar(tiny_bundle, tmp_path):
    import shutil

    from leukoview.models.bundle import finalize

    b = load_bundle(tiny_bundle)
    t = compare.comparison_table([b])
    pred = b.predictions()
    assert t.loc[0, "accuracy"] == pytest.approx((pred["predicted"] == pred["label"]).mean())  # from the rows
    assert t.loc[0, "size (MB)"] == round((tiny_bundle / "model.safetensors").stat().st_size / 2**20, 2)
    # a second model that gets 6 of the first model's right answers wrong, and nothing else different
    other = tmp_path / "other"
    shutil.copytree(tiny_bundle, other)
    right = pred.index[pred["predicted"] == pred["label"]][:6]
    assert len(right) == 6
    flipped = pred.copy()
    flipped.loc[right, "predicted"] = [next(c for c in b.classes if c != lab) for lab in pred.loc[right, "label"]]
    flipped.to_csv(other / "predictions.csv", index=False)
    raw = b.card.raw
    finalize(other, {**{k: v for k, v in raw.items() if k not in ("files", "format", "card_sha256")}, "id": "other"})
    r = compare.mcnemar(b, load_bundle(other))
    assert (r["only_a_right"], r["only_b_right"]) == (6, 0)
    assert r["p_value"] == pytest.approx(2 * 0.5**6)  # exact two-sided binomial: 0.03125
    assert r["reading"].startswith(b.id)


def test_mcnemar_refuses_different_splits(tiny_bundle, tmp_path):
    import dataclasses

    b = load_bundle(tiny_bundle)
    other = dataclasses.replace(b, card=dataclasses.replace(b.card, split={**b.card.split, "hash": "different"}))
    with pytest.raises(ValueError, match="different splits"):
        compare.mcnemar(b, other)


def test_measure_latency_is_recorded_in_the_card(tiny_bundle, tmp_path):
    import shutil

    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle, dst)
    result = latency.measure_latency(dst, runs=3)
    b = load_bundle(dst)  # still verifies, now including latency.json
    assert latency.latency_of(b)["median_ms"] == result["median_ms"] > 0


def test_recommended_models_come_first_in_the_picker():
    from pathlib import Path

    from leukoview.app.landing import is_recommended, picker_order
    from leukoview.models.bundle import Bundle
    from leukoview.models.card import Card

    def b(i, task):
        return Bundle(Path(i), Card(id=i, task=task, architecture="x", kind="network", classes=("a", "b"),
                                    positive=("a",), input={"size": 8}, threshold=0.5, files={}, dataset={}))

    items = [b("all4-cnn16", "all4"), b("wbc9-efficientnet_lite0-reinhard", "wbc9"),
             b("diff3-efficientnet_lite0-balanced", "diff3"),
             b("all4-efficientnet_lite0-noaug", "all4"), b("all4-efficientnet_lite0", "all4"),
             b("wbc5-efficientnet_lite0", "wbc5"), b("all4-efficientnet_lite0-cells-fieldhead", "all4"),
             b("wbc9-efficientnet_lite0", "wbc9"), b("all4-efficientnet_lite0-cells", "all4")]
    assert [x.id for x in picker_order(items)] == [
        "all4-efficientnet_lite0-cells-fieldhead", "diff3-efficientnet_lite0-balanced", "all4-cnn16",
        "all4-efficientnet_lite0", "all4-efficientnet_lite0-cells", "all4-efficientnet_lite0-noaug",
        "wbc5-efficientnet_lite0", "wbc9-efficientnet_lite0", "wbc9-efficientnet_lite0-reinhard"]
    assert not is_recommended(items[1])  # the two-laboratory wbc9 model: the three-laboratory one replaced it
    assert not is_recommended(items[3])
    assert not is_recommended(items[4])  # the all4 field model: the cell-level model is the task's recommended one
    assert not is_recommended(items[8])  # mean of cell logits: the refitted field head replaced it
    assert not is_recommended(items[5])  # wbc5 is superseded by the multi-source differential: comparison only
    assert is_recommended(b("cnmc-efficientnet_lite0", "cnmc"))  # no registry choice: <task>-efficientnet_lite0
