"""Cell-level scoring: every stained cell of a field found and scored on its own, the image's logits the mean of
its cells'; training, stored predictions and the predictor agree."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from leukoview.primitives.segment import find_cells


def disks(centres, radius, size=96, bg=(205, 215, 235), fg=(110, 70, 170), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = np.empty((size, size, 3), np.float32)
    img[:] = bg
    yy, xx = np.mgrid[:size, :size]
    for cy, cx in centres:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2] = fg
    img += rng.normal(0, 4, img.shape)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def test_find_cells_boxes_each_cell_largest_first():
    img = disks([(20, 20), (70, 30), (50, 75)], 8)
    found = find_cells(img, scale=1.5)
    assert len(found) == 3 and all(c.found for c in found)
    centres = sorted(((c.box[1] + c.box[3]) / 2, (c.box[0] + c.box[2]) / 2) for c in found)
    assert np.allclose(centres, sorted([(20, 20), (50, 75), (70, 30)]), atol=2)
    assert all(abs(c.side - 1.5 * 2 * 8) <= 4 for c in found)  # 1.5 x the inscribed diameter
    big = find_cells(disks([(25, 25), (70, 70)], 14))
    assert big[0].side >= find_cells(disks([(70, 70)], 6))[0].side


def test_touching_cells_stay_apart_and_nothing_violet_gives_none():
    assert len(find_cells(disks([(48, 36), (48, 60)], 12))) == 2
    assert find_cells(Image.new("RGB", (96, 96), (205, 215, 235))) == []
    assert len(find_cells(disks([(48, 48)], 40, size=96))) == 1  # a single cell filling the image: one box


def fields(base, n, seed):
    rng = np.random.default_rng(seed)
    for name, fg in (("benign", (150, 110, 190)), ("blast", (90, 40, 170))):
        (base / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            centres = [tuple(rng.integers(14, 82, 2)) for _ in range(int(rng.integers(2, 5)))]
            disks(centres, 9, fg=fg, seed=int(rng.integers(1 << 30))).save(base / name / f"{name}_{i:03d}.png")
    return base


@pytest.fixture(scope="module")
def cells_bundle(tmp_path_factory):
    from leukoview.jobs.train import TrainConfig, fit

    root = tmp_path_factory.mktemp("fields")
    fields(root / "fields", 20, seed=4)
    cfg = TrainConfig(dataset="folder:fields", positive=["blast"], arch="cnn32", data_root=str(root),
                      out=str(tmp_path_factory.mktemp("m") / "cells"), pretrained=False, epochs=2, batch_size=8,
                      workers=0, input_size=32, n_boot=20, lr=3e-3, ood_components=4, locate_cell=True,
                      locate_method="cells", locate_scale=1.6, max_cells=3)
    return fit(cfg, progress=False), root


def test_image_logits_are_the_mean_of_its_cells_and_reproduce_training(cells_bundle):
    from leukoview.jobs.predict import Predictor, score_files
    from leukoview.models.transforms import cell_views
    from leukoview.primitives.calibration import softmax

    folder, root = cells_bundle
    p = Predictor(folder, backend="torch")
    assert p.cell_level and p.bundle.card.input["locate"]["method"] == "cells"
    stored = p.bundle.predictions()
    img = Image.open(root / stored["file"].iloc[0]).convert("RGB")
    crops, views = cell_views(img, p.spec)
    assert 1 <= len(crops) <= 3
    logits, _ = p.forward(p.preprocess(views, located=True))
    expected = softmax(logits.mean(0, keepdims=True), p.temperature)[0]
    assert np.allclose(p.predict(img).probabilities[p.classes[0]], expected[0], atol=1e-5)
    found, per_cell = p.score_cells(img)
    assert len(found) == len(crops) and per_cell["suspicion"].shape == (len(crops),)
    out = score_files([root / f for f in stored["file"]], p, base=root)
    assert np.allclose(out["suspicion"].to_numpy(float), stored["suspicion"].to_numpy(float), atol=2e-3)
    assert (out["cells"].astype(int) >= 1).all() and "cell_found" not in out


def test_single_image_page_boxes_every_cell_of_a_cell_level_model(cells_bundle, tmp_path, monkeypatch):
    import io
    import shutil

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from tests.conftest import REPO

    folder, root = cells_bundle
    models = tmp_path / "models"
    shutil.copytree(folder, models / "cells")
    monkeypatch.setenv("LEUKOVIEW_MODELS_DIR", str(models))
    monkeypatch.setenv("LEUKOVIEW_REVIEW_DIR", str(tmp_path / "reviews"))
    st.cache_data.clear()
    st.cache_resource.clear()
    buf = io.BytesIO()
    disks([(25, 25), (70, 40), (45, 75)], 9, fg=(90, 40, 170), seed=7).save(buf, format="PNG")
    at = AppTest.from_file(str(REPO / "Home.py"), default_timeout=120).run()
    at.switch_page("pages/1_Single_Image.py").run()
    at.file_uploader(key="single_upload").set_value(("field.png", buf.getvalue(), "image/png")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("3 stained cell(s) found" in c.value for c in at.caption)
    table = at.dataframe[0].value
    assert table["cell"].tolist() == [1, 2, 3] and table["suspicion"].between(0, 1).all()
    assert any("Faithfulness" in m.value for m in at.markdown)  # Grad-CAM of the most suspicious cell
    st.cache_data.clear()
    st.cache_resource.clear()


def test_field_head_is_fitted_on_whole_images_and_folded_into_the_classifier(cells_bundle, tmp_path):
    """refit-head: a new bundle whose classifier is a logistic regression of each training image's label on its
    cells' mean features (chosen by calibrated validation NLL); the network's features are untouched, so an
    independent fit on the source bundle's own features gives the same logits; the source is not changed."""
    from sklearn.linear_model import LogisticRegression

    from leukoview.jobs.fieldhead import FIELD_HEAD_C
    from leukoview.jobs.predict import Predictor, score_files
    from leukoview.jobs.train import refit_field_head
    from leukoview.models.bundle import WEIGHTS, load_bundle, sha256_file

    folder, root = cells_bundle
    before = sha256_file(folder / WEIGHTS)
    out = refit_field_head(folder, tmp_path / "fh", progress=False)
    b = load_bundle(out)  # verified: sha256 of every file
    head = b.card.head
    assert b.card.config["field_head"] is True and b.id.endswith("-fieldhead")
    assert [r["C"] for r in head["tried"]] == list(FIELD_HEAD_C)
    chosen = next(r for r in head["tried"] if r["C"] == head["C"])  # the best (near ties: the stronger penalty)
    assert chosen["val_nll_calibrated"] <= min(r["val_nll_calibrated"] for r in head["tried"]) + 1e-5
    assert "mean cell features" in b.card.input["locate"]["what"]
    assert sha256_file(folder / WEIGHTS) == before

    src, new = Predictor(folder, backend="torch"), Predictor(out, backend="torch")
    split = b.split()
    images = {f: Image.open(root / f).convert("RGB") for f in split["file"]}

    def mean_features(part):
        files = split.loc[split["split"] == part, "file"]
        return src.raw_outputs([src.prepare(images[f]) for f in files])[1], split.loc[files.index, "label"]

    x_train, y_train = mean_features("train")
    x_test, _ = mean_features("test")
    mu, sd = x_train.mean(0), x_train.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    lr = LogisticRegression(C=head["C"], max_iter=5000, class_weight="balanced").fit((x_train - mu) / sd, y_train)
    margin = lr.decision_function((x_test - mu) / sd)  # two classes: log-odds of lr.classes_[1]
    test_files = split.loc[split["split"] == "test", "file"]
    logits, feats = new.raw_outputs([new.prepare(images[f]) for f in test_files])
    order = [b.classes.index(c) for c in lr.classes_]
    assert np.allclose(logits[:, order[1]] - logits[:, order[0]], margin, atol=0.05 * (1 + np.abs(margin).max()))
    assert np.allclose(feats, x_test, atol=1e-4)  # the network below the head is the source's

    stored = b.predictions()
    scored = score_files([root / f for f in stored["file"]], new, base=root)
    assert np.allclose(scored["suspicion"].to_numpy(float), stored["suspicion"].to_numpy(float), atol=2e-3)


def test_field_head_refuses_what_it_cannot_refit(cells_bundle, tiny_bundle, tmp_path, capsys):
    from leukoview.__main__ import main
    from leukoview.jobs.train import refit_field_head

    folder, _ = cells_bundle
    with pytest.raises(ValueError, match="another folder"):
        refit_field_head(folder, folder, progress=False)
    assert main(["refit-head", str(tiny_bundle), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "cell-level" in capsys.readouterr().err


def same_below_head(first, second) -> bool:
    """Whether two bundles' networks have the same weights everywhere but the classifier layer (and have some)."""
    a, b = first.build_model().state_dict(), second.build_model().state_dict()
    body = [k for k in a if not k.startswith(first.card.classifier)]
    return bool(body) and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in body)


def test_field_head_can_also_learn_from_background_swapped_copies(cells_bundle, tmp_path):
    from leukoview.jobs.train import refit_field_head
    from leukoview.models.bundle import load_bundle

    folder, _ = cells_bundle
    plain = load_bundle(refit_field_head(folder, tmp_path / "plain", progress=False))
    swapped = load_bundle(refit_field_head(folder, tmp_path / "swapped", swaps=1, progress=False))
    n_train = int((plain.split()["split"] == "train").sum())
    assert plain.card.head["train_images"] == n_train and swapped.card.head["train_images"] == 2 * n_train
    assert swapped.card.config["field_head_swaps"] == 1
    assert "background" in swapped.card.head["method"]
    a, b = plain.build_model().state_dict(), swapped.build_model().state_dict()
    head = [k for k in a if k.startswith(plain.card.classifier)]
    assert head and any(not np.allclose(a[k].numpy(), b[k].numpy()) for k in head)  # the copies changed the head
    assert same_below_head(plain, swapped)  # and nothing else


def test_field_head_for_fewer_cells_scores_at_most_that_many(cells_bundle, tiny_bundle, tmp_path, capsys):
    """refit-head --max-cells: the same network, at most N cells an image (largest first), the head fitted for that;
    the card says so and stored predictions reproduce through batch scoring."""
    from leukoview.__main__ import main
    from leukoview.jobs.predict import Predictor, score_files
    from leukoview.models.bundle import load_bundle
    from leukoview.primitives.segment import find_cells

    folder, root = cells_bundle
    assert main(["refit-head", str(folder), "--out", str(tmp_path / "one"), "--max-cells", "1", "--quiet"]) == 0
    b = load_bundle(tmp_path / "one")
    assert b.id.endswith("-fieldhead-1cells") and b.card.input["locate"]["max_cells"] == 1
    assert b.card.config["max_cells"] == 1
    assert same_below_head(load_bundle(folder), b)  # the network is the source's
    stored = b.predictions()
    files = [root / f for f in stored["file"]]
    several = [f for f in files if len(find_cells(Image.open(f).convert("RGB"), max_cells=3)) > 1]
    assert several  # images where the source scored more than one cell
    scored = score_files(files, Predictor(b.path, backend="torch"), base=root)
    assert (scored["cells"].astype(int) == 1).all()
    assert np.allclose(scored["suspicion"].to_numpy(float), stored["suspicion"].to_numpy(float), atol=2e-3)
    assert main(["refit-head", str(tiny_bundle), "--out", str(tmp_path / "x"), "--max-cells", "2", "--quiet"]) == 2
    assert "--max-cells applies to a cell-level model" in capsys.readouterr().err
    assert main(["refit-head", str(folder), "--out", str(tmp_path / "y"), "--max-cells", "0", "--quiet"]) == 2
    assert "at least 1" in capsys.readouterr().err


def test_every_cell_transform_gives_one_augmented_crop_per_found_cell(cells_bundle):
    import torch

    from leukoview.models.bundle import load_bundle
    from leukoview.models.transforms import cells, train_transform

    folder, root = cells_bundle
    spec = load_bundle(folder).card.input
    img = Image.open(next((root / "fields" / "blast").glob("*.png"))).convert("RGB")
    tf = train_transform(spec, acquisition=True, background=0.5, all_cells=True)
    torch.manual_seed(0)
    np.random.seed(0)
    x = tf(img)
    size = int(spec["size"])
    assert x.shape == (len(cells(img, spec)), 3, size, size) and len(x) >= 2
    assert not torch.allclose(x[0], x[1])  # each cell is its own crop
    with pytest.raises(ValueError, match="cell-level"):
        train_transform({k: v for k, v in spec.items() if k != "locate"}, all_cells=True)


def test_image_logits_of_cell_stacks_are_the_mean_of_each_images_cells():
    import torch

    from leukoview.jobs.rundata import image_logits

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 3)).eval()
    cells_, n = torch.randn(6, 3, 16, 16), torch.tensor([1, 3, 2])
    with torch.no_grad():
        out = image_logits(model, (cells_, n), torch.device("cpu"))
        each = model(cells_)
    assert out.shape == (3, 3)
    assert torch.allclose(out[0], each[0], atol=1e-6)
    assert torch.allclose(out[1], each[1:4].mean(0), atol=1e-6) and torch.allclose(out[2], each[4:].mean(0), atol=1e-6)


def test_field_level_fine_tune_keeps_the_source_split_and_says_where_its_weights_came_from(cells_bundle, tmp_path):
    """init_from + field_level: training goes on from a bundle's weights on its saved split (the test split stays
    unseen), on every cell of each field at once; the bundle reproduces its stored predictions."""
    from leukoview.jobs.predict import Predictor, score_files
    from leukoview.jobs.train import TrainConfig, fit
    from leukoview.models.bundle import WEIGHTS, load_bundle, sha256_file

    folder, root = cells_bundle
    src = load_bundle(folder)
    before = sha256_file(folder / WEIGHTS)
    values = {**src.card.config, "init_from": str(folder), "field_level": True, "epochs": 1,
              "out": str(tmp_path / "mil"), "variant": "mil"}
    out = fit(TrainConfig.from_file(None, **values), progress=False)
    b = load_bundle(out)
    assert b.card.fine_tuned_from["id"] == src.id
    assert b.card.fine_tuned_from["weights_sha256"] == src.card.files[WEIGHTS] == before
    assert b.card.fine_tuned_from["started"] == "from scratch" and not b.card.imagenet_initialised
    assert b.card.split_hash == src.card.split_hash
    assert "multiple-instance" in b.card.input["locate"]["what"]
    assert sha256_file(out / WEIGHTS) != before and sha256_file(folder / WEIGHTS) == before
    stored = b.predictions()
    scored = score_files([root / f for f in stored["file"]], Predictor(out, backend="torch"), base=root)
    assert np.allclose(scored["suspicion"].to_numpy(float), stored["suspicion"].to_numpy(float), atol=2e-3)


def test_field_level_and_fine_tuning_refuse_what_does_not_fit(cells_bundle, tmp_path):
    from leukoview.jobs.train import TrainConfig, fit
    from leukoview.models.bundle import load_bundle

    folder, _ = cells_bundle
    with pytest.raises(ValueError, match="every cell"):
        TrainConfig.from_file(None, field_level=True, locate_cell=True, locate_method="nucleus")
    values = {**load_bundle(folder).card.config, "init_from": str(folder), "epochs": 1}
    with pytest.raises(ValueError, match="arch"):
        fit(TrainConfig.from_file(None, **{**values, "arch": "cnn16", "out": str(tmp_path / "x")}), progress=False)
    with pytest.raises(ValueError, match="another folder"):
        fit(TrainConfig.from_file(None, **{**values, "out": str(folder)}), progress=False)


def test_a_field_model_gives_no_verdict_on_a_single_cell_crop(cells_bundle, tmp_path):
    """Issue: the ALL field model gave BCCD's single-cell crops a verdict 24% of the time."""
    from leukoview.jobs.predict import Predictor, score_folder

    folder, _ = cells_bundle
    p = Predictor(folder)
    field = disks([(20, 20), (70, 30), (50, 75)], 9)  # cells a tenth of the side across: a field
    single = disks([(48, 48)], 30)  # one cell filling the crop
    assert p.predict(field).wrong_kind == ""
    pred = p.predict(single)
    assert "single-cell image" in pred.wrong_kind and pred.ood_flag
    field.save(tmp_path / "field.png")
    single.save(tmp_path / "single.png")
    df = score_folder(tmp_path, p).set_index("file")
    assert df.at["single.png", "decision"] == "cannot assess" and "single-cell" in df.at["single.png", "wrong_kind"]
    assert df.at["field.png", "wrong_kind"] == ""
