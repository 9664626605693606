"""The cross-laboratory ablation table: each leukocyte recipe on its own split per source, on the DeepAPL test
patients (the diff3 split's JHH test part, never trained on by any of these models), on BCCD and on the C-NMC
sample (evaluation only). Writes reports/ablation-diff3.md.

    LEUKOVIEW_DATA_ROOT=../shared/data python scripts/ablation_diff3.py [--bundles models/a reports/…/b …]

The DeepAPL rows are scored here with each bundle's own threshold and OOD flag (score_files, as `score` does):
blast sensitivity (positive decision), normal cells not called positive, cannot-assess share, and the per-patient
blast % against the signed one (mean absolute error with a bootstrap interval over patients).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leukoview import audits
from leukoview.jobs.predict import Predictor, score_files  # noqa: E402
from leukoview.models import differential
from leukoview.models.bundle import load_bundle  # noqa: E402
from leukoview.primitives import metrics, settings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT = ["models/wbc9-efficientnet_lite0-reinhard", "models/diff3-efficientnet_lite0-balanced",
           "reports/ablation-diff3/balanced_adversary"]


def deepapl_test(b, root: Path) -> dict:
    """A bundle on the diff3 split's DeepAPL test patients."""
    split = load_bundle(REPO / "models" / "diff3-efficientnet_lite0-balanced").split()
    rows = split[(split["split"] == "test") & (split["source"] == "JHH")]
    df = score_files([root / f for f in rows["file"]], Predictor(b), base=root)
    df = df.assign(label=rows["label"].to_numpy(), patient=rows["patient"].to_numpy())
    blast = (df["label"] == "blast").to_numpy()
    pos = (df["decision"] == "positive").to_numpy()
    sens = metrics.bootstrap_ci(lambda i: float(pos[blast][i].mean()), int(blast.sum()), n_boot=1000)
    spec_v = ~pos[~blast]
    spec = metrics.bootstrap_ci(lambda i: float(spec_v[i].mean()), int((~blast).sum()), n_boot=1000)
    predicted = differential.per_patient(df, b.positive, patients=df["patient"])
    signed = differential.signed_counts(df.assign(label=np.where(blast, b.positive[0], df["label"])), b.positive)
    agree = differential.agreement(predicted, signed, n_boot=1000)
    return {"cells": len(df), "blasts": int(blast.sum()), "patients": int(df["patient"].nunique()),
            "sensitivity": float(pos[blast].mean()), "sensitivity_ci": sens,
            "normal_not_positive": float(spec_v.mean()), "normal_ci": spec,
            "cannot_assess": float((df["decision"] == "cannot assess").mean()),
            "mae": agree["mae_points"], "mae_ci": agree["mae_ci95"]}


def fmt(v, ci=None, pct=False) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    s = f"{v:.1%}" if pct else f"{v:.3f}"
    if ci:
        s += f" [{ci[0]:.1%}-{ci[1]:.1%}]" if pct else f" [{ci[0]:.3f}-{ci[1]:.3f}]"
    return s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundles", nargs="+", default=DEFAULT)
    ap.add_argument("--out", default=str(REPO / "reports" / "ablation-diff3.md"))
    a = ap.parse_args()
    root = settings.data_root()
    bundles = [load_bundle(REPO / p, verify=(REPO / p / "model.safetensors").is_file()) for p in a.bundles
               if (REPO / p / "card.json").is_file()]
    own = ["| model | own test (all sources) acc / bal. acc | blast sens. / spec. at threshold | ECE | per source: "
           "acc, sens., spec. |", "|---|---|---|---|---|"]
    ext = ["| model | DeepAPL test: blast sensitivity | normal cells not called blast | cannot assess | per-patient "
           "blast % MAE (points) | BCCD: positive / positive no flag / own type (bal.) | C-NMC sample: blast "
           "suspicion ROC-AUC |", "|---|---|---|---|---|---|---|"]
    for b in bundles:
        m = b.metrics
        per = "; ".join(f"{s} {v['accuracy']:.3f}, {fmt(v['at_threshold']['sensitivity'])}, "
                        f"{fmt(v['at_threshold']['specificity'])}" for s, v in (m.get("per_source") or {}).items())
        own.append(f"| {b.id} | {m['accuracy']:.3f} / {m['balanced_accuracy']:.3f} | "
                   f"{fmt(m['at_threshold']['sensitivity'])} / {fmt(m['at_threshold']['specificity'])} | "
                   f"{m['ece']:.3f} | {per} |")
        d = deepapl_test(b, root)
        e = audits.result(b, audits.EXTERNAL, {}) or {}
        bccd = e.get("bccd_wbc")
        cn = (e.get("cnmc_sample") or {}).get("positive_vs_normal")
        ext.append(f"| {b.id} | {fmt(d['sensitivity'], d['sensitivity_ci'], True)} | "
                   f"{fmt(d['normal_not_positive'], d['normal_ci'], True)} | {d['cannot_assess']:.1%} | "
                   f"{d['mae']:.1f} [{d['mae_ci'][0]:.1f}-{d['mae_ci'][1]:.1f}] | "
                   + (f"{bccd['positive_decision_among_normal']['rate']:.1%} / "
                      f"{bccd['positive_not_flagged_among_normal']['rate']:.1%} / {bccd['balanced_own_type']:.3f}"
                      if bccd else "—") + " | "
                   + (f"{cn['roc_auc']['value']:.3f} [{cn['roc_auc']['ci95'][0]:.3f}-{cn['roc_auc']['ci95'][1]:.3f}]"
                      if cn else "—") + " |")
        print(ext[-1], flush=True)
    text = "\n".join(["# Cross-laboratory ablation: the leukocyte recipes side by side", "",
                      "`python scripts/ablation_diff3.py`. Own test split: each model's own (wbc9: PBC + LMU; diff3: "
                      "PBC + LMU + JHH, JHH split by patient). DeepAPL test: the diff3 split's "
                      f"{d['patients']} JHH test patients ({d['cells']} cells, {d['blasts']} blasts), scored with each "
                      "model's own threshold and OOD flag; wbc9 never saw any JHH cell. BCCD and the C-NMC sample are "
                      "evaluation only (`python -m leukoview external`). Intervals: 95% bootstrap.", "", *own, "",
                      *ext, ""])
    Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
