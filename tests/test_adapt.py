"""Site adaptation: a new bundle from a site's cells, checked on cells it held back; the base never changes."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from leukoview.jobs import adapt, site_cells
from leukoview.models.bundle import load_bundle, sha256_file
from tests.conftest import cell_image


def _site(folder, per_type: int, seed: int = 2):
    """The tiny bundle's two types in another lab's look: a green cast and a darker background."""
    rng = np.random.default_rng(seed)
    for label, kind in (("normal", 0), ("blast", 3)):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for k in range(per_type):
            a = np.asarray(cell_image(kind, rng), np.float32) * np.array([0.75, 1.0, 0.8]) + np.array([0, 25, 0])
            Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(folder / label / f"{label}_{k}.png")
    return folder


def test_adapt_writes_a_new_verified_bundle_and_leaves_the_base_alone(tiny_bundle, tmp_path, monkeypatch):
    from leukoview.__main__ import main

    monkeypatch.setenv("LEUKOVIEW_MLFLOW", "0")
    monkeypatch.setenv("LEUKOVIEW_CACHE_DIR", str(tmp_path / "cache"))
    base = tmp_path / "base"
    shutil.copytree(tiny_bundle, base)
    before = {p.name: sha256_file(p) for p in base.iterdir()}
    site = _site(tmp_path / "site", 16)
    root = load_bundle(base).card.config["data_root"]
    monkeypatch.setenv("LEUKOVIEW_DATA_ROOT", root)
    assert main(["adapt", "--bundle", str(base), "--site", "labB", "--folder", str(site), "--out",
                 str(tmp_path / "adapted"), "--quiet"]) == 0
    assert {p.name: sha256_file(p) for p in base.iterdir()} == before  # the base bundle is never changed
    b = load_bundle(tmp_path / "adapted")  # every sha256 verified
    r = b.card.adapted
    assert r["site"] == "labB" and r["base"]["weights_sha256"] == load_bundle(base).card.weights_sha256
    assert r["cells_used"] == {"blast": 8, "normal": 8} and r["cells_evaluated"] == {"blast": 8, "normal": 8}
    ev = r["evaluation"]
    assert set(ev) == {"base", "adapted"} and all(len(v["own_type"]) == 2 for v in ev.values())
    assert r["recommended"] == adapt.better(ev["base"], ev["adapted"])[0]
    assert ("NOT better" in r["verdict"]) != r["recommended"]
    # the site's evaluate cells were never fitted on: the adapt and evaluate parts do not overlap
    cells = pd.DataFrame(json.loads((b.path / "site_cells.json").read_text())["cells"])
    assert not set(cells.loc[cells["part"] == "adapt", "file"]) & set(cells.loc[cells["part"] == "evaluate", "file"])
    # the stored test predictions are what the adapted bundle predicts (the fp16 head that ships)
    from leukoview.jobs.predict import Predictor
    from leukoview.primitives.images import load_image

    pred = b.predictions().head(6)
    out = Predictor(b).predict_batch([load_image(f"{root}/{f}") for f in pred["file"]])
    np.testing.assert_allclose(out["suspicion"], pred["suspicion"], atol=2e-3)
    # the site's adapt cells now count as seen in training; an evaluate cell does not
    p = Predictor(b)
    adapt_file = site / "blast" / cells.loc[(cells["part"] == "adapt") & (cells["label"] == "blast"), "file"].iloc[0]
    eval_file = site / "blast" / cells.loc[(cells["part"] == "evaluate") & (cells["label"] == "blast"),
                                           "file"].iloc[0]
    assert p.seen_split(adapt_file) == "train" and p.seen_split(eval_file) == ""


def test_adapt_refuses_too_few_cells_and_says_how_many(tiny_bundle, tmp_path):
    site = _site(tmp_path / "site", 6)
    cells = site_cells.site_from_folder(site, ["blast", "normal"])
    with pytest.raises(site_cells.AdaptError, match="at least 10 .*5 to adapt on, 5 to check on.*blast 6"):
        adapt.adapt(tiny_bundle, cells, site="labB", out=tmp_path / "x")
    with pytest.raises(site_cells.AdaptError, match="another folder"):
        adapt.adapt(tiny_bundle, site_cells.site_from_folder(_site(tmp_path / "s2", 12), ["blast", "normal"]),
                    site="labB", out=tiny_bundle)


def test_site_split_keeps_a_slide_on_one_side_and_the_verdict_rule():
    cells = pd.DataFrame({"file": [f"f{i}" for i in range(40)], "label": ["a", "b"] * 20,
                          "group": [f"slide{i % 8}" for i in range(40)]})
    s = site_cells.split_site(cells, seed=1)
    assert (s.groupby("group")["part"].nunique() == 1).all() and set(s["part"]) == {"adapt", "evaluate"}
    plain = site_cells.split_site(cells.assign(group=""), seed=1)
    assert plain.groupby("label")["part"].value_counts().unstack().to_numpy().tolist() == [[10, 10], [10, 10]]
    base = {"balanced_own_type": 0.5, "positive_among_normal": {"rate": 0.10}}
    assert adapt.better(base, {"balanced_own_type": 0.8, "positive_among_normal": {"rate": 0.05}})[0]
    assert not adapt.better(base, {"balanced_own_type": 0.8, "positive_among_normal": {"rate": 0.20}})[0]
    assert not adapt.better(base, {"balanced_own_type": 0.4, "positive_among_normal": {"rate": 0.0}})[0]
