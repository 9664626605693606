from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from leukoview.__main__ import main
from leukoview.jobs.predict import Predictor, score_folder
from leukoview.primitives import metrics as M
from leukoview.primitives.ood import fit_ood, ood_scores
from tests.conftest import cell_image, make_class_folders


@pytest.fixture(scope="module")
def predictor(tiny_bundle):
    return Predictor(tiny_bundle)


def test_predict_returns_probabilities_decision_and_ood(predictor):
    p = predictor.predict(cell_image(3, np.random.default_rng(1)))
    assert set(p.probabilities) == {"blast", "normal"}
    assert sum(p.probabilities.values()) == pytest.approx(1, abs=1e-5)
    assert p.suspicion == pytest.approx(p.probabilities["blast"], abs=1e-6)
    assert p.decision == (p.suspicion >= predictor.threshold)
    assert np.isfinite(p.ood_score)


def test_predictor_reproduces_stored_test_predictions(tiny_bundle, predictor):
    from leukoview.primitives.images import load_image

    pred = predictor.bundle.predictions()
    root = Path(predictor.bundle.card.config["data_root"])
    rows = pred.head(6)
    out = predictor.predict_batch([load_image(root / f) for f in rows["file"]])
    np.testing.assert_allclose(out["suspicion"], rows["suspicion"], atol=1e-4)


def test_score_folder_goes_on_past_bad_files(tmp_path, predictor):
    make_class_folders(tmp_path / "batch", {"x": 0, "y": 3}, 3)
    (tmp_path / "batch" / "x" / "broken.png").write_bytes(b"this is not a png")
    (tmp_path / "batch" / "empty.jpg").write_bytes(b"")
    (tmp_path / "batch" / "notes.txt").write_text("ignored: not an image suffix")
    progress = []
    df = score_folder(tmp_path / "batch", predictor, batch_size=4, progress=lambda d, t: progress.append((d, t)))
    assert len(df) == 8 and progress[-1] == (8, 8)
    bad = df[df["error"] != ""]
    assert set(bad["file"]) == {"x/broken.png", "empty.jpg"}
    assert bad["error"].str.contains("not a readable image|empty").all()
    good = df[df["error"] == ""]
    p = predictor
    expected = np.where(good["ood_flag"].astype(bool), "cannot assess",
                        np.where(good["suspicion"] >= p.threshold, "positive", "negative"))
    assert (good["decision"] == expected).all()  # a flagged image gets no verdict, the rest the threshold's


def test_far_ood_images_get_no_verdict_in_the_csv(tiny_bundle, tmp_path):
    """Non-smear images are refused by the input gate or flagged by the model: never a positive or negative."""
    from leukoview.primitives.pictures import not_cells

    folder = tmp_path / "photos"
    folder.mkdir()
    sets = not_cells(40, seed=1)
    for name, ims in sets.items():
        for i, im in enumerate(ims):
            im.save(folder / f"{name[:5]}_{i}.png")
    df = score_folder(folder, Predictor(tiny_bundle))
    assert set(df["decision"]) <= {"cannot assess", "not a blood-smear image"}
    gated = df[df["decision"] == "not a blood-smear image"]
    assert gated["suspicion"].isna().all() and (gated["gate"] != "").all()  # no score, and the reason
    assert (df.loc[df["decision"] == "cannot assess", "ood_flag"] == True).all()  # noqa: E712
    photos = df[df["file"].str.startswith("photo")]
    assert (photos["decision"] == "not a blood-smear image").mean() >= 0.9  # the gate alone refuses photographs


def test_cli_score_writes_csv(tmp_path, tiny_bundle, capsys):
    make_class_folders(tmp_path / "in" / "sub", {"a": 0}, 2)
    out = tmp_path / "scores.csv"
    assert main(["score", str(tmp_path / "in"), "--bundle", str(tiny_bundle), "--out", str(out)]) == 0
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df.columns[:1]) == ["file"] and df["file"].tolist() == ["sub/a/a_000.png", "sub/a/a_001.png"]
    assert {"blast", "normal", "predicted", "suspicion", "decision", "ood_flag", "error"} <= set(df.columns)
    assert "2 files scored" in capsys.readouterr().out


def test_cli_score_missing_folder_is_a_clear_error(tmp_path, tiny_bundle, capsys):
    assert main(["score", str(tmp_path / "nope"), "--bundle", str(tiny_bundle), "--out", "x.csv"]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_ood_flags_far_away_features_more_than_in_distribution_ones():
    rng = np.random.default_rng(0)
    train = np.concatenate([rng.normal(0, 1, (200, 20)), rng.normal(4, 1, (200, 20))])
    labels = np.repeat([0, 1], 200)
    val = np.concatenate([rng.normal(0, 1, (100, 20)), rng.normal(4, 1, (100, 20))])
    state, thr = fit_ood(train, labels, val, components=10)
    far = rng.normal(15, 1, (50, 20))
    assert (ood_scores(state, far) > thr).mean() > 0.95
    assert (ood_scores(state, val) > thr).mean() == pytest.approx(0.01, abs=0.011)


def test_cli_audit_prints_groups(synthetic_root, capsys):
    assert main(["audit", "cnmc", "--data-root", str(synthetic_root)]) == 0
    out = capsys.readouterr().out
    assert "patients in more than one split: 0" in out and "groups crossing our train/val/test split: 0" in out


def test_metrics_module_is_used_consistently(tiny_bundle):
    from leukoview.models.bundle import load_bundle

    b = load_bundle(tiny_bundle)
    pred = b.predictions("val")
    chosen = M.choose_threshold(pred["positive"].to_numpy(), pred["suspicion"].to_numpy(),
                                min_specificity=b.card.config["min_specificity"])
    assert chosen["threshold"] == b.threshold  # the stored predictions are exactly what the threshold saw


def test_micro_batches_give_the_same_scores_as_single_images(predictor):
    imgs = [cell_image(k % 4, np.random.default_rng(k)) for k in range(7)]  # not a multiple of the micro-batch
    together = predictor.predict_batch(imgs)["suspicion"]
    alone = np.array([predictor.predict_batch([im])["suspicion"][0] for im in imgs])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_onnx_backend_gives_the_same_scores_as_torch(tiny_bundle):
    from leukoview.models import onnx_backend

    if not onnx_backend.available():
        pytest.skip("onnxruntime is not installed")
    fast, plain = Predictor(tiny_bundle, backend="onnx"), Predictor(tiny_bundle, backend="torch")
    assert (fast.backend, plain.backend) == ("onnx", "torch")
    imgs = [cell_image(k % 4, np.random.default_rng(k)) for k in range(9)]
    a, b = fast.predict_batch(imgs), plain.predict_batch(imgs)
    np.testing.assert_allclose(a["probs"], b["probs"], atol=1e-5)
    np.testing.assert_allclose(a["ood_score"], b["ood_score"], rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="backend must be"):
        Predictor(tiny_bundle, backend="tensorrt")


@pytest.mark.parametrize("size", [(64, 64), (96, 80), (300, 240)])
def test_fast_preprocessing_equals_the_torchvision_transform(size):
    from PIL import Image

    from leukoview.models.transforms import eval_transform, normalise_batch, resize_array

    spec = {"size": 64, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    rng = np.random.default_rng(size[0])
    imgs = [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(3)]
    plain = np.stack([eval_transform(spec)(im).numpy() for im in imgs])
    fast = normalise_batch([resize_array(im, spec) for im in imgs], spec)
    assert fast.shape == plain.shape == (3, 3, 64, 64) and fast.dtype == np.float32
    np.testing.assert_allclose(fast, plain, atol=1e-5)


def test_scores_do_not_depend_on_the_chunk_size(tmp_path, predictor):
    make_class_folders(tmp_path / "b", {"x": 0, "y": 3}, 5, suffix=".jpg")
    runs = [score_folder(tmp_path / "b", predictor, batch_size=bs, workers=w) for bs, w in [(1, 1), (3, 2), (128, 2)]]
    for df in runs[1:]:
        pd.testing.assert_frame_equal(df, runs[0], check_exact=False, atol=2e-4)  # float32 batch rounding


def test_score_says_which_images_the_model_was_trained_on(tiny_bundle, tmp_path):
    """A folder mixing the bundle's own train, validation and test images: in_training matches the split."""
    import json
    import shutil

    from leukoview.models.bundle import load_bundle

    b = load_bundle(tiny_bundle)
    root = Path(json.loads((tiny_bundle / "card.json").read_text())["training"]["config"]["data_root"])
    split = b.split()
    mixed = tmp_path / "mixed"
    picks = split.groupby("split").head(3)
    for f in picks["file"]:
        (mixed / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / f, mixed / f)
    df = score_folder(mixed, Predictor(b)).set_index("file")
    for f, part in zip(picks["file"], picks["split"], strict=True):
        assert df.at[f, "in_training"] == ("" if part == "test" else part), (f, part)
    p = Predictor(b)
    train_file = picks.loc[picks["split"] == "train", "file"].iloc[0]
    assert p.seen_split(root / train_file) == "train"
    assert p.seen_split(root / picks.loc[picks["split"] == "test", "file"].iloc[0]) == ""


def test_a_colour_normalised_bundle_records_the_step_and_the_predictor_reproduces_its_test_split(tmp_path):
    """colour_norm, sharpening and the locating step's framing (min_side, inside) go into the card's input spec;
    the predictor (ONNX and eager) then applies exactly them, so the stored test predictions come back, and a colour
    cast does not reach the network."""
    from leukoview.jobs.predict import score_files
    from leukoview.jobs.train import TrainConfig, fit

    root = tmp_path / "data"
    make_class_folders(root / "cells", {"normal": 0, "blast": 3}, 16, seed=9)
    cfg = TrainConfig(dataset="folder:cells", positive=["blast"], arch="cnn32", data_root=str(root),
                      out=str(tmp_path / "m"), pretrained=False, epochs=1, batch_size=8, workers=0, input_size=48,
                      n_boot=20, lr=3e-3, ood_components=4, colour_norm="reinhard",
                      locate_cell=True, locate_min_side=0.5, locate_inside=True, sharpen=150)
    folder = fit(cfg, progress=False)
    p = Predictor(folder)
    assert p.spec["colour"]["method"] == "reinhard"
    assert p.spec["locate"]["min_side"] == 0.5 and p.spec["locate"]["inside"] is True
    assert p.spec["sharpen"]["percent"] == 150 and p.spec["sharpen"]["radius"] == 2.0
    assert "shorter side" in p.spec["locate"]["what"] and "never padded" in p.spec["locate"]["what"]
    stored = p.bundle.predictions()
    for predictor in (p, Predictor(folder, backend="torch")):
        scored = score_files([root / f for f in stored["file"]], predictor, base=root)
        np.testing.assert_allclose(scored["suspicion"].to_numpy(), stored["suspicion"].to_numpy(), atol=1e-4)
    img = cell_image(3, np.random.default_rng(1))
    cast = Image.fromarray(np.clip(np.asarray(img, float) * (0.8, 0.95, 1.1), 0, 255).astype(np.uint8))
    seen = [p.prepare(x).astype(float) for x in (img, cast)]  # what the network gets: the cast is taken out
    raw = [np.asarray(x.resize((48, 48)), float) for x in (img, cast)]
    assert np.abs(seen[0] - seen[1]).mean() < np.abs(raw[0] - raw[1]).mean() / 4
    with pytest.raises(ValueError, match="colour_norm"):
        TrainConfig.from_file(None, colour_norm="macenko")
    with pytest.raises(ValueError, match="locate_min_side"):
        TrainConfig.from_file(None, locate_min_side=1.5)
    with pytest.raises(ValueError, match="sharpen"):
        TrainConfig.from_file(None, sharpen=-10)
