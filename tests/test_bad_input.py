"""Every kind of bad or odd input through the library (single prediction, batch scoring) and the page."""
from __future__ import annotations

import io
import os
import re
import zipfile

import numpy as np
import pytest

from leukoview.app import batch
from leukoview.jobs.predict import Predictor, score_folder
from leukoview.primitives.images import ImageError, load_image
from leukoview.primitives.segment import NOT_A_SMEAR
from leukoview.primitives.vocab import CANNOT_ASSESS
from tests.bad_inputs import corpus
from tests.test_app import app_env, no_exceptions, run_page  # noqa: F401 (fixture)

CORPUS = corpus()


def test_corpus_has_at_least_25_kinds():
    assert len(CORPUS) >= 25


@pytest.fixture(scope="module")
def predictor(tiny_bundle):
    return Predictor(tiny_bundle)


@pytest.mark.parametrize("kind", sorted(CORPUS))
def test_single_prediction(kind, predictor):
    name, data, expect = CORPUS[kind]
    if expect == "ok":
        img = load_image(data, name=name)
        assert img.mode == "RGB" and min(img.size) >= 8
        p = predictor.predict(img)
        assert np.isfinite(p.suspicion) and np.isfinite(p.ood_score)
        again = predictor.predict(load_image(data, name=name))  # the same bytes give the same answer
        assert again.decision == p.decision and again.suspicion == pytest.approx(p.suspicion, abs=1e-6)
    else:
        with pytest.raises(ImageError, match=expect) as err:
            load_image(data, name=name)
        assert name in str(err.value)  # the message says which file


def test_exif_rotation_and_strip_conversion():
    name, data, _ = CORPUS["exif_rotated"]
    assert load_image(data).size == (40, 80)  # 80x40 stored, rotated by its EXIF tag
    assert load_image(CORPUS["wide_strip"][1]).size == (4000, 8)


def test_batch_goes_on_past_every_bad_file(tmp_path, predictor):
    folder = tmp_path / "batch"
    folder.mkdir()
    for name, data, _ in CORPUS.values():
        (folder / name).write_bytes(data)
    (folder / "looks_like.png").mkdir()  # a directory named like an image: a folder, searched like any other
    (folder / "looks_like.png" / "inner.png").write_bytes(CORPUS["exif_rotated"][1])
    os.symlink(folder, folder / "loop")  # a symlink loop back to the folder
    df = score_folder(folder, predictor)
    by_file = df.set_index("file")
    for name, _, expect in CORPUS.values():
        if expect == "ok":
            assert by_file.at[name, "error"] == "", name  # decoded; then scored, or refused by the input gate
            row = by_file.loc[name]
            if row["decision"] not in (NOT_A_SMEAR, CANNOT_ASSESS):  # a verdict follows the threshold
                assert (row["decision"] == "positive") == (row["suspicion"] >= predictor.threshold), name
        else:
            assert re.search(expect, by_file.at[name, "error"]), (name, by_file.at[name, "error"])
    assert "looks_like.png" not in by_file.index and by_file.at["looks_like.png/inner.png", "error"] == ""
    assert not any(f.startswith("loop/") for f in df["file"])  # the loop is not followed


def test_zip_with_traversal_member_and_bomb(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("../../x.png", CORPUS["grayscale"][1])
        z.writestr("ok.png", CORPUS["grayscale"][1])
    files, refused = batch.extract_zip(buf.getvalue(), tmp_path / "out")
    assert [f.name for f in files] == ["ok.png"] and "outside the extraction folder" in refused[0]
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("big.png", b"\0" * (64 * 2**20))
    with pytest.raises(batch.BoundaryError, match="zip bomb"):
        batch.extract_zip(bomb.getvalue(), tmp_path / "out2")


@pytest.mark.parametrize("kind", sorted(CORPUS))
def test_page_upload_never_shows_a_traceback(kind, app_env):  # noqa: F811
    name, data, expect = CORPUS[kind]
    at = run_page("pages/1_Single_Image.py")
    at.file_uploader(key="single_upload").set_value((name, data, "application/octet-stream"))
    at.run()
    no_exceptions(at)
    errors = " ".join(e.value for e in at.error)
    if expect == "ok":  # decoded: scored with its map, or refused by the input gate with its reason
        assert "cannot be scored" not in errors, errors
        assert any("Faithfulness" in m.value for m in at.markdown) or "not a blood-smear image" in errors.lower()
    else:
        assert "cannot be scored" in errors and re.search(expect, errors)


def test_batch_page_lists_unreadable_files(app_env):  # noqa: F811
    data = app_env / "data" / "cells"
    for kind in ("zero_byte", "text_as_png", "bomb_30000"):
        name, payload, _ = CORPUS[kind]
        (data / name).write_bytes(payload)
    at = run_page("pages/2_Batch_Review.py")
    at.button(key="batch_score").click().run()
    no_exceptions(at)
    assert {m.label: m.value for m in at.metric}["Unreadable"] == "3"
    listed = at.expander[0].children  # the expander's table of files and reasons
    assert listed and any("could not be read" in e.label for e in at.expander)


def test_upload_limit_is_configured():
    import tomllib

    from tests.conftest import REPO

    cfg = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert 0 < cfg["server"]["maxUploadSize"] <= 500
    assert batch.MAX_ZIP_BYTES <= 4 * 2**30  # zips are limited again after extraction
