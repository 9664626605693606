"""Scoring on Ray: the local engine's rows, resumable after an interruption, complete after a worker dies."""
from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import make_class_folders

ray = pytest.importorskip("ray")

from leukoview.app import scale  # noqa: E402
from leukoview.jobs.predict import Predictor, score_folder  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


@pytest.fixture
def folder(tmp_path):
    make_class_folders(tmp_path / "imgs" / "a", {"normal": 0, "blast": 3}, 40, seed=3)  # 80 images, two batches
    (tmp_path / "imgs" / "a" / "normal" / "broken.png").write_bytes(b"not an image")
    return tmp_path / "imgs"


def _csv(path):
    return pd.read_csv(path, keep_default_na=False)


def test_the_ray_engine_writes_the_local_engines_csv(local_ray, folder, tiny_bundle, tmp_path):
    local = tmp_path / "local.csv"
    score_folder(folder, Predictor(tiny_bundle)).to_csv(local, index=False)
    out = tmp_path / "ray.csv"
    scale.score_ray(folder, tiny_bundle, out, actors=2)
    a, b = _csv(local), _csv(out)
    assert list(a.columns) == list(b.columns) and a["file"].tolist() == b["file"].tolist()
    assert (b["error"] != "").sum() == 1  # the broken file is a row with its error, not a crashed job
    numeric = ["normal", "blast", "suspicion", "ood_score"]
    assert (a.drop(columns=numeric) == b.drop(columns=numeric)).all().all()  # decisions, flags, errors: exactly
    for col in numeric:
        x, y = pd.to_numeric(a[col], errors="coerce"), pd.to_numeric(b[col], errors="coerce")
        assert ((x - y).abs().fillna(0) <= 1e-6).all() and (x.isna() == y.isna()).all(), col


def test_an_interrupted_run_goes_on_without_rescoring(local_ray, folder, tiny_bundle, tmp_path):
    out = tmp_path / "ray.csv"
    with pytest.raises(KeyboardInterrupt):
        scale.score_ray(folder, tiny_bundle, out, actors=1, stop_after=1)
    first = scale.done_files(out, folder.resolve())
    assert 0 < len(first) < 81
    seen = []
    df = scale.score_ray(folder, tiny_bundle, out, actors=1, progress=seen.append)
    assert seen[-1]["done_before"] == len(first) and seen[-1]["done"] == 81 - len(first)  # none rescored
    assert len(df) == 81 and df["file"].is_unique
    assert set(_csv(out)["file"]) == {p.relative_to(folder).as_posix() for p in folder.rglob("*.png")}


def test_a_worker_that_dies_mid_run_is_retried_and_the_result_is_complete(folder, tiny_bundle, tmp_path,
                                                                          monkeypatch):
    marker = tmp_path / "died"
    monkeypatch.setenv(scale.DIE_ONCE_ENV, str(marker))
    ray.shutdown()  # a fresh Ray that passes the fault-injection variable to its workers
    try:
        out = tmp_path / "ray.csv"
        df = scale.score_ray(folder, tiny_bundle, out, actors=2)
        assert marker.exists()  # a worker did die
        assert len(df) == 81 and df["file"].is_unique
    finally:
        ray.shutdown()


def test_on_1000_real_images_the_ray_csv_equals_the_local_csv(tmp_path):
    from tests.conftest import needs_real_data, real_data_root

    if real_data_root() is None:
        pytest.skip(needs_real_data.kwargs["reason"])
    from leukoview.primitives.images import find_images
    from leukoview.primitives.tasks import TASKS
    from tests.conftest import REPO

    root = real_data_root()
    bundle = REPO / "models" / TASKS["diff3"].recommended
    paths = (find_images(root / "bccd_wbc") + find_images(root / "deepapl"))[:1000]
    from leukoview.jobs.predict import score_files

    local = score_files(paths, Predictor(bundle), base=root)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        got = scale.score_ray(root, bundle, tmp_path / "ray.csv", actors=2, paths=paths)
    finally:
        ray.shutdown()
    local.to_csv(tmp_path / "local.csv", index=False)
    a, b = _csv(tmp_path / "local.csv"), _csv(tmp_path / "ray.csv")
    assert len(got) == 1000 and list(a.columns) == list(b.columns) and a["file"].tolist() == b["file"].tolist()
    numeric = [c for c in a.columns if c in (*Predictor(bundle).classes, "suspicion", "ood_score")]
    assert (a.drop(columns=numeric) == b.drop(columns=numeric)).all().all()
    for col in numeric:
        x, y = pd.to_numeric(a[col], errors="coerce"), pd.to_numeric(b[col], errors="coerce")
        assert ((x - y).abs().fillna(0) <= 1e-6).all(), col
