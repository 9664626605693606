"""MLflow tracking of a training run: parameters, per-epoch metrics, final metrics and the bundle artifact."""
from __future__ import annotations

import pytest

from leukoview.app import tracking
from tests.conftest import make_class_folders

mlflow = pytest.importorskip("mlflow")


def test_a_tiny_training_run_is_found_in_the_file_store(tmp_path, monkeypatch):
    from leukoview.__main__ import main

    root = tmp_path / "data"
    make_class_folders(root / "cells", {"normal": 0, "blast": 3}, 10, seed=4)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.delenv(tracking.OFF_ENV, raising=False)
    out = tmp_path / "bundle"
    assert main(["train", "--dataset", "folder:cells", "--positive", "blast", "--arch", "cnn16", "--data-root",
                 str(root), "--out", str(out), "--epochs", "2", "--batch-size", "8", "--workers", "0",
                 "--input-size", "48", "--no-pretrained", "--quiet"]) == 0
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    runs = mlflow.search_runs(experiment_names=[tracking.EXPERIMENT], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["arch"] == "cnn16" and run.data.params["epochs"] == "2"
    assert run.data.params["dataset"] == "folder:cells" and len(run.data.params["weights_sha256"]) == 64
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2]  # one value per epoch
    assert 0 <= run.data.metrics["test_accuracy"] <= 1 and "test_sensitivity" in run.data.metrics
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "bundle")}
    assert {"bundle/card.json", "bundle/model.safetensors", "bundle/train_log.csv"} <= artifacts


def test_tracking_off_or_missing_leaves_training_as_it_was(tmp_path, monkeypatch):
    monkeypatch.setenv(tracking.OFF_ENV, "0")
    assert not tracking.enabled() and tracking.log_bundle(tmp_path) is None
    assert tracking.final_metrics({"accuracy": 0.9, "ece": float("nan"), "at_threshold": {"sensitivity": 1.0}},
                                  {"bccd wbc": {"balanced_own_type": 0.3}}) == {
        "test_accuracy": 0.9, "test_sensitivity": 1.0, "external_bccd_wbc_own_type_balanced": 0.3}


def test_the_default_store_is_local_and_needs_no_server(tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(tracking.OFF_ENV, raising=False)
    run_id = tracking.log_bundle(tiny_bundle, store_dir=tmp_path / "mlruns")
    assert run_id and any((tmp_path / "mlruns").rglob("card.json"))  # the bundle, as the run's artifact
