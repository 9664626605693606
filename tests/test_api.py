"""The scoring API: same rows as ``score``, clear 4xx answers for bad files, the token, the models list."""
from __future__ import annotations

import io
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from leukoview.app import api  # noqa: E402
from leukoview.jobs.predict import Predictor, score_folder  # noqa: E402
from leukoview.models.bundle import load_bundle  # noqa: E402
from tests.conftest import REPO, cell_image, needs_real_data, real_data_root  # noqa: E402


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _sky() -> bytes:
    rng = np.random.default_rng(0)
    sky = np.empty((96, 96, 3), np.float32)
    sky[:60], sky[60:] = (140, 185, 230), (200, 120, 60)  # a blue sky over an orange roof
    return _png(Image.fromarray(np.clip(sky + rng.normal(0, 4, sky.shape), 0, 255).astype(np.uint8)))


@pytest.fixture
def client(tiny_bundle, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(tiny_bundle, models / "tiny")
    bid = load_bundle(models / "tiny").id
    return TestClient(api.create_app(models, default_bundle="tiny", token="")), bid


def test_health_models_and_a_score_that_equals_the_score_command(client, tmp_path):
    c, bid = client
    assert c.get("/healthz").json()["status"] == "ok"
    listed = c.get("/v1/models").json()
    assert [m["id"] for m in listed["models"]] == [bid] and listed["limits"]["max_pixels"] > 0
    rng = np.random.default_rng(5)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(6):
        cell_image(k % 4, rng).save(folder / f"c{k}.png")
    files = sorted(folder.glob("*.png"))
    r = c.post("/v1/score", files=[("files", (p.name, p.read_bytes(), "image/png")) for p in files])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["bundle"] == bid and len(body["weights_sha256"]) == 64
    expected = score_folder(folder, Predictor(tmp_path / "models" / "tiny")).set_index("file")
    for row in body["results"]:
        want = expected.loc[row["file"]]
        assert row["decision"] == want["decision"] and row["predicted"] == want["predicted"]
        assert row["suspicion"] == pytest.approx(want["suspicion"], abs=1e-6)
        assert row["ood_score"] == pytest.approx(want["ood_score"], abs=1e-6)


@pytest.mark.parametrize("name, data, status, says", [
    ("empty.png", b"", 422, "empty"),
    ("notes.png", b"just some text, renamed", 422, "not a readable image"),
    ("huge.png", None, 413, "megapixels"),
    ("holiday.png", "sky", 422, "not a stained blood-smear image"),
])
def test_bad_files_get_clear_4xx_answers(client, name, data, status, says):
    c, _ = client
    if data is None:
        data = _png(Image.new("L", (9000, 9000)))  # 81 MP: refused before decoding
    elif data == "sky":
        data = _sky()
    r = c.post("/v1/score", files=[("files", (name, data, "image/png"))])
    assert r.status_code == status, r.text
    assert says in r.json()["detail"] and "Traceback" not in r.text


def test_a_mixed_request_keeps_the_good_images_and_names_the_refused(client):
    c, _ = client
    good = _png(cell_image(3, np.random.default_rng(1)))
    r = c.post("/v1/score", files=[("files", ("good.png", good, "image/png")), ("files", ("bad.png", b"", "x"))])
    assert r.status_code == 200
    by_file = {row["file"]: row for row in r.json()["results"]}
    assert by_file["bad.png"]["error"] and by_file["good.png"]["decision"] in ("positive", "negative",
                                                                                "cannot assess")


def test_request_size_limit_unknown_bundle_and_token(tiny_bundle, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(tiny_bundle, models / "tiny")
    c = TestClient(api.create_app(models, default_bundle="tiny", token="s3cret", max_request_bytes=10_000))
    good = _png(cell_image(3, np.random.default_rng(1)))
    assert c.get("/healthz").status_code == 200  # open
    assert c.get("/v1/models").status_code == 401
    auth = {"Authorization": "Bearer s3cret"}
    assert c.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/v1/models", headers=auth).status_code == 200
    r = c.post("/v1/score", headers=auth, files=[("files", ("big.bin", b"x" * 20_000, "x"))])
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    r = c.post("/v1/score", headers=auth, files=[("files", ("g.png", good, "image/png"))], data={"bundle": "nope"})
    assert r.status_code == 404 and "/v1/models" in r.json()["detail"]
    r = c.post("/v1/score", headers=auth, files=[("files", ("g.png", good, "image/png"))],
               data={"bundle": "../../etc"})
    assert r.status_code == 404


@needs_real_data
def test_the_api_answers_200_real_images_as_the_score_command_does(tmp_path):
    """200 real cells (BCCD and the recommended model's own test split), in requests of 32: each answer equals the
    score CSV row for that image (same decision, values to 1e-6)."""
    root = real_data_root()
    c = TestClient(api.create_app(REPO / "models", token=""))
    bid = c.get("/healthz").json()["default_bundle"]
    b = load_bundle(REPO / "models" / bid)
    files = sorted((root / "bccd_wbc").rglob("*.jpg"))[:100] + [root / f for f in b.predictions()["file"][:100]]
    assert len(files) == 200
    from leukoview.jobs.predict import score_files

    expected = score_files(files, Predictor(b), base=root).set_index("file")
    results = []
    for i in range(0, len(files), 32):
        part = files[i:i + 32]
        r = c.post("/v1/score", files=[("files", (str(p.relative_to(root)), p.read_bytes(), "image/jpeg"))
                                       for p in part])
        assert r.status_code == 200, r.text
        results += r.json()["results"]
    assert len(results) == 200
    got = pd.DataFrame(results)
    got["file"] = [str(p.relative_to(root)) for p in files]  # the API names a result by the upload's base name
    got = got.set_index("file")
    assert (got["decision"] == expected.loc[got.index, "decision"]).all()
    for col in ("suspicion", *b.classes):
        np.testing.assert_allclose(got[col].astype(float), expected.loc[got.index, col].astype(float), atol=1e-6)
    # the OOD score is written to 4 decimals; another batch composition can move its last digit
    np.testing.assert_allclose(got["ood_score"].astype(float), expected.loc[got.index, "ood_score"].astype(float),
                               atol=1.01e-4)
    assert (got["ood_flag"] == expected.loc[got.index, "ood_flag"]).all()
