"""The shift test and the OOD evaluation (synthetic data)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from leukoview.app import compare
from leukoview.audits import oodeval, shift
from leukoview.jobs.predict import Predictor
from leukoview.models import bundle
from leukoview.primitives import pictures
from leukoview.primitives.images import load_image


def _root(bundle):
    return json.loads((bundle / "card.json").read_text())["training"]["config"]["data_root"]


def test_shift_test_without_shift_reproduces_the_stored_metrics(tiny_bundle, tmp_path):
    from leukoview.models.bundle import load_bundle

    folder = tmp_path / "b"
    shutil.copytree(tiny_bundle, folder)
    r = shift.shift_eval(folder, _root(folder), progress=False)
    assert set(r["results"]) == set(shift.SHIFTS)
    m = load_bundle(folder).metrics
    assert r["results"]["none"]["accuracy"] == pytest.approx(m["accuracy"])
    assert r["results"]["none"]["sensitivity"] == pytest.approx(m["at_threshold"]["sensitivity"])
    bundle.update(folder, metrics={"shift": r})
    b = load_bundle(folder)  # verifies after the rewrite
    t = compare.shift_table([b])
    assert len(t) == len(shift.SHIFTS)
    assert t.set_index("shift").at["none", "accuracy"] == pytest.approx(m["accuracy"])


def test_ood_eval_counts_every_set(tiny_bundle, tmp_path):
    from leukoview.models.bundle import load_bundle

    folder = tmp_path / "b"
    shutil.copytree(tiny_bundle, folder)
    r = oodeval.ood_eval(folder, _root(folder), n_generated=8, progress=False)
    own = r["sets"]["own test split (in distribution)"]
    b = load_bundle(folder)
    test = b.split().query("split == 'test'")
    assert own["images"] == len(test)  # counted from the split file, not from what ood_eval read
    # rescoring the test images themselves through the predictor gives the same flags
    images = [load_image(Path(_root(folder)) / f) for f in test["file"]]
    assert own["flagged"] == int(Predictor(folder).predict_batch(images)["ood_flag"].sum())
    assert {"photographs (crops)", "coloured noise", "gradients and flat colours", "drawn shapes and text"} <= set(
        r["sets"])
    # every generated set is scored with the shipped flag: rescoring one reproduces its count
    p = Predictor(folder)
    noise = pictures.not_cells(8, seed=0)["coloured noise"]
    assert r["sets"]["coloured noise"]["flagged"] == int(p.predict_batch(noise)["ood_flag"].sum())


def test_generated_non_cells_are_rgb_images():
    sets = pictures.not_cells(8, size=64)
    assert sum(len(v) for v in sets.values()) == 8
    assert all(isinstance(im, Image.Image) and im.size == (64, 64) and im.mode == "RGB"
               for v in sets.values() for im in v)


def test_held_out_classes_are_left_out_of_training_and_scored_as_ood_set(synthetic_root, tmp_path):
    from leukoview.jobs.train import TrainConfig, fit
    from leukoview.models.bundle import load_bundle

    cfg = TrainConfig(dataset="wbc5", arch="cnn16", data_root=str(synthetic_root), out=str(tmp_path / "m"),
                      pretrained=False, epochs=1, batch_size=8, workers=0, input_size=48, n_boot=10,
                      ood_components=4, exclude_classes=["basophil", "monocyte"], variant="holdout")
    b = load_bundle(fit(cfg, progress=False))
    assert b.id == "wbc5-cnn16-holdout" and b.classes == ["erythroblast", "myeloblast", "seg_neutrophil"]
    assert not set(b.split()["label"]) & {"basophil", "monocyte"}
    r = oodeval.ood_eval(b.path, synthetic_root, n_generated=4, per_set=6, progress=False)
    for c in ("basophil", "monocyte"):
        held = r["sets"][f"held-out class never trained on: {c}"]
        assert held["images"] == 6 and sum(held["predicted_counts"].values()) == 6
        assert set(held["predicted_counts"]) <= set(b.classes)
        assert 0 <= held["called_positive_unflagged"] <= min(held["called_positive"], 6 - held["flagged"])
    own = r["sets"]["own test split (in distribution)"]
    test = b.split().query("split == 'test'")
    decided = Predictor(b.path).predict_batch([load_image(synthetic_root / f) for f in test["file"]])
    assert own["called_positive"] == int((decided["decision"] == "positive").sum())
    with pytest.raises(ValueError, match="no positive class left"):
        fit(TrainConfig(dataset="wbc5", arch="cnn16", data_root=str(synthetic_root), exclude_classes=["myeloblast"]),
            progress=False)


def test_compare_sections_print_the_pages_tables(tiny_bundle, tmp_path):
    from leukoview.cli.models import _section_table
    from leukoview.models.bundle import load_bundle

    folder = tmp_path / "b"
    shutil.copytree(tiny_bundle, folder)
    bundle.update(folder, metrics={"shift": shift.shift_eval(folder, _root(folder), max_images=4, progress=False)})
    b = load_bundle(folder)
    t = _section_table("shift", [b])
    assert list(t["shift"]) == list(shift.SHIFTS) and b.id in t.columns
    assert _section_table("ood", [b]).empty and _section_table("cam", [b]).empty  # not computed for this bundle


def test_ood_summary_agrees_with_the_per_set_table(tiny_bundle, tmp_path):
    from leukoview.models.bundle import load_bundle

    folder = tmp_path / "b"
    shutil.copytree(tiny_bundle, folder)
    bundle.update(folder, metrics={"ood_eval": oodeval.ood_eval(folder, _root(folder), n_generated=8,
                                                                progress=False)})
    b = load_bundle(folder)
    row = compare.ood_summary([b]).iloc[0]
    sets = compare.ood_table([b]).set_index("image set")
    far = sets.loc[list(compare.FAR_OOD)]
    own = sets.loc[compare.OWN_SET]
    assert row["own test split flagged"].endswith(f"({own['flagged']}/{own['images']})")
    assert row["far OOD with a verdict"] == far["would get a verdict"].sum()
    assert row["far OOD gated or flagged"] == \
        f"{far['images'].sum() - far['would get a verdict'].sum()}/{far['images'].sum()}"
    assert far["images"].sum() == 8 + 2 * (8 // 4)  # the generated sets and the two held-out kinds
    assert row["wrong-task detector"] == "no" and row["palette check"] == "no"


def test_compare_reads_a_record_kept_without_its_weights_only_when_asked(tiny_bundle, tmp_path, capsys):
    """Recipe-screen and ablation folders keep cards, metrics and predictions, not weights: `compare --records`
    tables them; without it, such a folder is no usable bundle."""
    from leukoview.__main__ import main

    folder = tmp_path / "runs" / "b"
    shutil.copytree(tiny_bundle, folder)
    bundle.update(folder, metrics={"shift": shift.shift_eval(folder, _root(folder), max_images=4, progress=False)})
    (folder / "model.safetensors").unlink()
    assert main(["compare", "--models-dir", str(tmp_path / "runs"), "--section", "shift"]) == 1
    assert "no bundles" in capsys.readouterr().out
    assert main(["compare", "--models-dir", str(tmp_path / "runs"), "--section", "shift", "--records",
                 "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| shift |") and f"| {bundle.load_bundle(folder, verify=False).id} |" in out


def test_compare_tables_shipped_bundles_and_records_of_several_folders_and_picks_models(tiny_bundle, tmp_path,
                                                                                       capsys):
    """An ablation table puts a shipped bundle beside records of another folder: `--models-dir A B` reads both
    (in that order) and `--model ID ...` keeps only the bundles named, in the order named; an unknown id is an
    error, not a quiet smaller table."""
    from leukoview.__main__ import main

    for name in ("shipped/one", "records/two", "records/three"):
        shutil.copytree(tiny_bundle, tmp_path / name)
        card = tmp_path / name / bundle.CARD
        card.write_text(json.dumps({**json.loads(card.read_text()), "id": name.split("/")[1]}))
    dirs = [str(tmp_path / "shipped"), str(tmp_path / "records")]

    def rows(*extra):
        assert main(["compare", "--models-dir", *dirs, "--records", "--markdown", *extra]) == 0
        return [line.split("|")[1].strip() for line in capsys.readouterr().out.splitlines()[2:]]

    assert rows() == ["one", "three", "two"]
    assert rows("--model", "two", "one") == ["two", "one"]
    assert main(["compare", "--models-dir", *dirs, "--records", "--model", "one", "four"]) == 1
    assert "no such bundle: four" in capsys.readouterr().out


def test_cells_section_agrees_with_the_shift_and_models_tables(tiny_bundle, tmp_path, capsys):
    """`compare --section cells`: one row a model whose background figures are the shift table's, and a bundle
    without the audits still gets its row (no missing-key error), just without those columns."""
    from leukoview.__main__ import main
    from leukoview.models.bundle import load_bundle

    folder = tmp_path / "runs" / "b"
    shutil.copytree(tiny_bundle, folder)
    bundle.update(folder, metrics={"shift": shift.shift_eval(folder, _root(folder), max_images=8, progress=False)})
    b, bare = load_bundle(folder), load_bundle(tiny_bundle)
    row = compare.cells_table([b]).iloc[0]
    sh = compare.shift_table([b]).set_index("shift")
    for name in compare.BACKGROUND_REMOVED:
        short = compare.BACKGROUND_SHORT[name]
        assert row[f"{short}: AUC"] == pytest.approx(sh.loc[name, "roc_auc"], nan_ok=True)
        assert row[f"{short}: bal. acc. drop"] == pytest.approx(
            sh.loc["none", "balanced_accuracy"] - sh.loc[name, "balanced_accuracy"])
    models = compare.comparison_table([b]).iloc[0]
    assert (row["sensitivity"], row["specificity"], row["ECE"]) == (models["sensitivity"], models["specificity"],
                                                                    models["ECE"])
    assert not any(c.startswith("bg") for c in compare.cells_table([bare]).columns)
    assert main(["compare", "--models-dir", str(tmp_path / "runs"), "--section", "cells", "--markdown"]) == 0
    assert "bg → black: AUC" in capsys.readouterr().out


def test_shift_on_the_validation_split_is_kept_apart_and_partial_runs_keep_the_other_shifts(tiny_bundle, tmp_path,
                                                                                           monkeypatch):
    """`shift --split val` re-renders the validation split (for choosing a recipe without the test split) and stores
    it as shift_val, leaving the pages' test-split result alone; `--only` re-runs some shifts and keeps the rest."""
    from leukoview.__main__ import main
    from leukoview.models.bundle import load_bundle

    folder = tmp_path / "b"
    shutil.copytree(tiny_bundle, folder)
    monkeypatch.setenv("LEUKOVIEW_DATA_ROOT", _root(folder))
    assert main(["shift", str(folder), "--quiet"]) == 0
    full = load_bundle(folder).metrics["shift"]
    assert main(["shift", str(folder), "--split", "val", "--only", "none", "blur sigma 1.5", "--quiet"]) == 0
    b = load_bundle(folder)  # verified: the card's sha256 follow the update
    assert b.metrics["shift"] == full and b.metrics["shift_val"]["split"] == "val"
    assert list(b.metrics["shift_val"]["results"]) == ["none", "blur sigma 1.5"]
    assert b.metrics["shift_val"]["images"] == len(b.predictions("val"))
    # unshifted validation images score as the stored validation predictions do
    assert b.metrics["shift_val"]["results"]["none"]["accuracy"] == pytest.approx(b.metrics["validation"]["accuracy"])
    assert main(["shift", str(folder), "--only", "blur sigma 1.5", "--quiet"]) == 0
    again = load_bundle(folder).metrics["shift"]
    assert list(again["results"]) == list(full["results"])  # the other shifts are kept
    assert again["results"]["blur sigma 1.5"] == pytest.approx(full["results"]["blur sigma 1.5"])
    assert main(["shift", str(folder), "--only", "no such shift", "--quiet"]) == 2
