"""MLflow tracking of training runs (optional: without the ``mlflow`` package, training works as before).

:func:`log_bundle` records a written bundle as one MLflow run: the training config as parameters, the per-epoch
log (``train_log.csv``) as metrics by epoch, the final test metrics and every external set's figures, and the
bundle folder as an artifact. The store is ``$MLFLOW_TRACKING_URI`` when set, else a local file store in
``mlruns/`` in the project (git-ignored; no server needed). MLflow keeps its file store in maintenance mode and
asks for an opt-in (``MLFLOW_ALLOW_FILE_STORE``), which a file store gets here; ``mlflow-skinny`` has no SQL
store, so a team server is named by ``MLFLOW_TRACKING_URI=http://…``. ``LEUKOVIEW_MLFLOW=0`` turns it
off. ``python -m leukoview train`` (and ``adapt``) call it after writing the bundle.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from leukoview.primitives import settings

EXPERIMENT = "leukoview"
OFF_ENV = "LEUKOVIEW_MLFLOW"


def enabled() -> bool:
    if os.environ.get(OFF_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return False
    return True


def local_dir() -> Path:
    return settings.REPO_ROOT / "mlruns"


def tracking_uri(default_dir: Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI``, else a file store in ``default_dir`` (default: ``mlruns/`` in the project)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri:
        return uri
    folder = (Path(default_dir) if default_dir else local_dir()).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder.as_uri()


def _flat(prefix: str, obj, out: dict) -> dict:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = json.dumps(obj) if isinstance(obj, (list, tuple)) else obj
    return out


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def final_metrics(metrics: dict, external: dict) -> dict[str, float]:
    """The figures a run is compared by: own test split at the threshold, and each external set."""
    out = {f"test_{k}": metrics.get(k) for k in ("accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "ece")}
    at = metrics.get("at_threshold") or {}
    out.update(test_sensitivity=at.get("sensitivity"), test_specificity=at.get("specificity"))
    for name, r in (external or {}).items():
        key = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in name)
        out[f"external_{key}_normal_called_positive"] = (r.get("positive_decision_among_normal") or {}).get("rate")
        out[f"external_{key}_own_type_balanced"] = r.get("balanced_own_type")
        out[f"external_{key}_roc_auc"] = ((r.get("positive_vs_normal") or {}).get("roc_auc") or {}).get("value")
    return {k: n for k, v in out.items() if (n := _number(v)) is not None}


def log_bundle(folder: Path | str, *, store_dir: Path | None = None, run_name: str | None = None) -> str | None:
    """Log a written bundle as an MLflow run; returns the run id, or None when tracking is off or unavailable.
    ``store_dir``: the local store's folder when ``$MLFLOW_TRACKING_URI`` is unset (default ``mlruns/``)."""
    if not enabled():
        return None
    import mlflow
    import pandas as pd

    from leukoview import audits
    from leukoview.models.bundle import LOG, load_bundle

    b = load_bundle(folder)
    uri = tracking_uri(store_dir)
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # the local store this project documents
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=run_name or b.id) as run:
        params = _flat("", b.card.config, {})
        params.update({"bundle_id": b.id, "task": b.task, "architecture": b.card.architecture,
                       "weights_sha256": b.card.weights_sha256, "threshold": b.threshold,
                       "imagenet_initialised": b.card.imagenet_initialised})
        if b.card.adapted:
            params.update(_flat("adapted", {k: v for k, v in b.card.adapted.items() if not isinstance(v, dict)}, {}))
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        log_path = Path(b.path) / LOG
        if log_path.is_file():
            for row in pd.read_csv(log_path).to_dict("records"):
                step = int(row.get("epoch", 0))
                mlflow.log_metrics({k: n for k, v in row.items() if k != "epoch" and (n := _number(v)) is not None},
                                   step=step)
        mlflow.log_metrics(final_metrics(b.metrics, audits.result(b, audits.EXTERNAL, {}) or {}))
        mlflow.set_tags({"leukoview.models.bundle": b.id, "leukoview.task": b.task})
        mlflow.log_artifacts(str(b.path), artifact_path="bundle")
        return run.info.run_id
