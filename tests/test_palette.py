"""The palette check: fitted on the own train split's colours and thresholded on its validation split, it flags
images of other colours through every scoring path, whatever the network's own flags do, and keeps its false
flags on new images of the own kind low."""
from __future__ import annotations

import shutil

import numpy as np
from PIL import Image

from leukoview.audits import palette
from leukoview.jobs.predict import Predictor, score_folder
from leukoview.models.bundle import load_bundle
from tests.conftest import cell_image
from tests.test_wrongtask import field_folders


def test_palette_check_flags_other_colours_through_every_path(tmp_path, tiny_bundle):
    b = tmp_path / "tiny"
    shutil.copytree(tiny_bundle, b)
    root = load_bundle(b).card.config["data_root"]
    rng = np.random.default_rng(11)
    _, held = field_folders(tmp_path, rng, fit=0, held=30)  # pale blue fields: colours the cells never have
    images = [Image.open(f).convert("RGB") for f in sorted(held.glob("*.png"))]
    before = Predictor(b)
    assert before.palette is None and np.isnan(before.predict_batch(images)["palette"]).all()  # without: as before
    info = palette.fit(b, root, progress=False)
    n_val = int((load_bundle(b).split()["split"] == "val").sum())
    assert info["reference_images"] == int((load_bundle(b).split()["split"] == "train").sum())
    assert info["val_flag_rate"] <= np.ceil(0.005 * n_val) / n_val + 1e-9
    p = Predictor(b)  # the bundle still verifies with the check's files recorded
    assert p.palette is not None
    out = p.predict_batch(images)
    assert (out["palette"] > p.palette[1]).mean() >= 0.9  # the check itself fires, not only the network's flags
    scored = score_folder(held, p)
    np.testing.assert_array_equal(scored["ood_flag"].astype(bool).to_numpy(), out["ood_flag"])  # score = batch
    assert set(scored.loc[scored["ood_flag"].astype(bool), "decision"]) == {"cannot assess"}
    single = p.predict(images[0])
    assert single.ood_flag == bool(out["ood_flag"][0])
    own = p.predict_batch([cell_image(k, rng) for k in (0, 3) * 20])  # new images of its own kind
    assert np.nanmean(own["palette"] > p.palette[1]) <= 0.1
    assert np.isfinite(own["palette"]).all()
