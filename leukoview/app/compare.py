"""The comparison page's tables, from bundle files only (app layer; also printed by ``leukoview compare``): the
models table, per-class recall, a paired test on shared images, and the audits' tables — shift test, Grad-CAM
mass, OOD evaluation, shortcut cues — each read from what the audit wrote into the bundle."""
from __future__ import annotations

import numpy as np
import pandas as pd

from leukoview import audits
from leukoview.app.landing import is_recommended
from leukoview.audits.latency import latency_of
from leukoview.audits.shift import SHIFTS
from leukoview.models import bundle
from leukoview.primitives import metrics


def comparison_table(bundles: list[bundle.Bundle]) -> pd.DataFrame:
    """One row per bundle with the figures the comparison page and ``leukoview compare`` show."""
    rows = []
    for b in bundles:
        m, c = b.metrics, b.card
        lat = latency_of(b)
        tr = c.training
        rows.append({
            "model": b.id, "recommended": "★" if is_recommended(b) else "", "task": c.task,
            "architecture": c.architecture,
            "kind": c.kind if c.is_network else f"classical on {c.input.get('features', '?')}",
            "ImageNet init": c.imagenet_initialised, "parameters": c.get("parameters"),
            "size (MB)": round(sum((b.path / f).stat().st_size for f in c.files
                                   if f.startswith(("model.", "xgboost."))) / 2**20, 2),
            "input px": c.input["size"],
            "epochs": (f"best {tr.get('best_epoch')}, ran {tr.get('epochs_run')}/{c.config.get('epochs')}"
                       if c.is_network and c.config else "—"),
            "accuracy": m["accuracy"], "balanced accuracy": m["balanced_accuracy"], "ROC-AUC": m["roc_auc"],
            "PR-AUC": m["pr_auc"], "threshold": b.threshold,
            "sensitivity": m["at_threshold"]["sensitivity"], "specificity": m["at_threshold"]["specificity"],
            "ECE": m["ece"], "test images": m["n_images"],
            "training time (min)": round(tr.get("wall_time_s", float("nan")) / 60, 1),
            "CPU latency (ms/img)": lat.get("median_ms") if lat else None,
            "note": tr.get("note", ""),
            "split": c.split_hash,
        })
    return pd.DataFrame(rows)


KEY_METRICS = ("model", "recommended", "accuracy", "balanced accuracy", "ROC-AUC", "sensitivity", "specificity",
               "ECE")


def key_metrics_first(df: pd.DataFrame) -> pd.DataFrame:
    """The comparison table with the model and the figures a reader compares first, then the rest."""
    first = [c for c in KEY_METRICS if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]]


def per_class_recall(bundles: list[bundle.Bundle]) -> pd.DataFrame:
    rows = []
    for b in bundles:
        for r in b.metrics["per_class"]:
            rows.append({"model": b.id, "class": r["class"], "recall": r["recall"], "support": r["support"]})
    return pd.DataFrame(rows)


def mcnemar(a: bundle.Bundle, b: bundle.Bundle) -> dict:
    """Exact McNemar test (:func:`leukoview.primitives.metrics.mcnemar`) on the test images both bundles scored (same
    split required), with a reading."""
    if a.card.split_hash != b.card.split_hash:
        raise ValueError(f"{a.id} and {b.id} were evaluated on different splits; a paired test needs the same "
                         "test images")
    if list(a.classes) != list(b.classes):
        raise ValueError(f"{a.id} and {b.id} predict different classes")
    pa, pb = a.predictions(), b.predictions()
    m = pa[["file", "label", "predicted"]].merge(pb[["file", "predicted"]], on="file", suffixes=("_a", "_b"))
    r = metrics.mcnemar(m["predicted_a"] == m["label"], m["predicted_b"] == m["label"])
    p = r["p_value"]
    return {**r, "reading": ("no evidence the two differ on these images" if p >= 0.05 else
                             f"{a.id if r['only_a_right'] > r['only_b_right'] else b.id} is right significantly "
                             f"more often (p={p:.3g})")}


def markdown_table(df: pd.DataFrame) -> str:
    """A DataFrame as a GitHub Markdown table (metrics to 4 decimals; sizes, times and latencies to 3 figures)."""
    plain = {"size (MB)", "training time (min)", "CPU latency (ms/img)", "threshold"}

    def cell(v, col):
        if v is None:
            return "—"
        if isinstance(v, float):
            if np.isnan(v):
                return ""
            if col in plain:
                return f"{v:.3g}"
            return f"{v:.4g}" if abs(v) >= 10 else f"{v:.4f}"
        return str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v, c) for v, c in zip(row, df.columns, strict=True)) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines)


def balanced_accuracy_by_shift(bundles) -> pd.DataFrame:
    """Shifts (rows, in :data:`SHIFTS` order) x models (columns): balanced accuracy — the comparison page's and
    ``leukoview compare --section shift``'s table."""
    t = shift_table(bundles)
    if t.empty:
        return t
    wide = t.pivot(index="shift", columns="model", values="balanced_accuracy")
    return wide.reindex([s for s in SHIFTS if s in wide.index])


def shift_table(bundles) -> pd.DataFrame:
    rows = []
    for b in bundles:
        s = audits.result(b, audits.SHIFT)
        if not s:
            continue
        for name, r in s["results"].items():
            rows.append({"model": b.id, "shift": name, **{k: r[k] for k in ("accuracy", "balanced_accuracy",
                                                                             "roc_auc", "sensitivity",
                                                                             "specificity", "ood_flag_rate")}})
    return pd.DataFrame(rows)


def cam_table(bundles) -> pd.DataFrame:
    """One row per bundle and class: CAM mass vs area on stained pixels, background and corners."""
    rows = []
    for b in bundles:
        s = audits.result(b, audits.CAM_STATS)
        if not s:
            continue
        for cls, part in {"all test images": s["overall"], **s["per_class"]}.items():
            deletion = s.get("deletion", {})
            rows.append({"model": b.id, "class": cls,
                         **{f"{r} mass": part[r]["mass"] for r in ("stained", "background", "corners")},
                         **{f"{r} area": part[r]["area"] for r in ("stained", "background", "corners")},
                         "deletion advantage": (deletion.get("advantage") if cls == "all test images" else
                                                deletion.get("per_class", {}).get(cls)),
                         "faithfulness gain (median)": s.get("faithfulness_band", {}).get("p50")
                         if cls == "all test images" else None})
    return pd.DataFrame(rows)


def ood_table(bundles) -> pd.DataFrame:
    rows = []
    for b in bundles:
        e = audits.result(b, audits.OOD_EVAL)
        if not e:
            continue
        for name, r in e["sets"].items():
            row = {"model": b.id, "image set": name, "images": r["images"], "flagged": r["flagged"],
                   "flag rate": r["flag_rate"]}
            if "gated" in r:  # evaluations from before the input gate lack these
                row.update({"refused by the input gate": r["gated"], "would get a verdict": r["verdicts"]})
            if "called_positive" in r:  # evaluations from before these fields were added lack them
                top = max(r["predicted_counts"].items(), key=lambda kv: kv[1], default=("", 0))
                row.update({"called positive": r["called_positive"],
                            "called positive, not flagged": r["called_positive_unflagged"],
                            "top prediction": f"{top[0]} ({top[1]})" if top[0] else ""})
            rows.append(row)
    return pd.DataFrame(rows)


FAR_OOD = ("photographs (crops)", "coloured noise", "gradients and flat colours", "drawn shapes and text",
           "matplotlib sample photos (crops)", "matplotlib charts")
OWN_SET = "own test split (in distribution)"


def ood_summary(bundles) -> pd.DataFrame:
    """One row per bundle of its OOD evaluation (``leukoview oodeval``): the own test split's false flags, each other
    dataset's cells flagged (wrong task; C-NMC never fitted), and the generated non-cell images gated or flagged,
    with how many would still get a verdict."""
    rows = []
    for b in bundles:
        e = audits.result(b, audits.OOD_EVAL)
        if not e or OWN_SET not in e["sets"]:
            continue
        sets, own = e["sets"], e["sets"][OWN_SET]
        other = {k.split(" cells (another dataset)")[0]: r for k, r in sets.items() if "(another dataset)" in k}
        far = [sets[k] for k in FAR_OOD if k in sets]
        caught = sum(r.get("gated_or_flagged", r["flagged"]) for r in far)
        rows.append({
            "model": b.id, "wrong-task detector": "yes" if b.wrong_task() is not None else "no",
            "palette check": "yes" if b.palette() is not None else "no",
            "own test split flagged": f"{own['flag_rate']:.1%} ({own['flagged']}/{own['images']})",
            "other tasks' cells flagged": ", ".join(f"{k} {r['flag_rate']:.1%}" for k, r in other.items()
                                                    if k != "cnmc"),
            "C-NMC flagged (never fitted)": f"{other['cnmc']['flag_rate']:.1%}" if "cnmc" in other else "",
            "far OOD gated or flagged": f"{caught}/{sum(r['images'] for r in far)}",
            "far OOD with a verdict": sum(r.get("verdicts", r["images"] - r["flagged"]) for r in far)})
    return pd.DataFrame(rows)


def shortcut_rows(result: dict) -> pd.DataFrame:
    """The cue-only classifiers as rows to read next to the models' figures (comparison page, CLI)."""
    rows = [{"non-cell cues": name, "classifier": g["classifier"], "balanced accuracy": g["balanced_accuracy"],
             "accuracy": g["accuracy"], "positive-class ROC-AUC": g["positive_roc_auc"]}
            for name, g in result["groups"].items()]
    return pd.DataFrame(rows)


def external_table(bundles) -> pd.DataFrame:
    """One row per bundle and external set (``leukoview external``): in-distribution figures next to another lab's."""
    rows = []
    for b in bundles:
        for name, r in audits.result(b, audits.EXTERNAL, {}).items():
            per = r["per_folder"]
            row = {"model": b.id, "external set": name, "own test accuracy": b.metrics["accuracy"],
                   "own balanced accuracy": b.metrics["balanced_accuracy"], "images": r["images"],
                   "normal cells called positive": r["positive_decision_among_normal"]["rate"],
                   "positive, not flagged": r["positive_not_flagged_among_normal"]["rate"],
                   "own type (balanced)": r["balanced_own_type"], "OOD flagged": r["ood_flag_rate"]}
            row.update({f"{k} own type": (v["own_type"]["rate"] if v["own_type"] else None) for k, v in per.items()})
            rows.append(row)
    return pd.DataFrame(rows)


BACKGROUND_REMOVED = ("background removed (black)", "background removed (white)", "background of another image")
# the cells table's short column stems for them (the page's table is wide)
BACKGROUND_SHORT = {"background removed (black)": "bg → black", "background removed (white)": "bg → white",
                    "background of another image": "bg → other image"}


def cells_table(bundles) -> pd.DataFrame:
    """One row per bundle with the ALL issue's figures side by side (``leukoview compare --section cells``): the own
    test split at the shipped threshold, the background conditions of the shift test (ROC-AUC and balanced accuracy,
    and how far the balanced accuracy falls from the unshifted), Grad-CAM mass on stained pixels (overall and the
    weakest class) and the C-NMC cells scored as an external set. A bundle lacks a column when its audit was not run."""
    rows = []
    for b in bundles:
        m = b.metrics
        row = {"model": b.id, "accuracy": m["accuracy"], "balanced accuracy": m["balanced_accuracy"],
               "sensitivity": m["at_threshold"]["sensitivity"], "specificity": m["at_threshold"]["specificity"],
               "ECE": m["ece"]}
        shift = (audits.result(b, audits.SHIFT) or {}).get("results", {})
        for name in BACKGROUND_REMOVED:
            if name in shift and "none" in shift:
                r = shift[name]
                row[f"{BACKGROUND_SHORT[name]}: AUC"] = r["roc_auc"]
                row[f"{BACKGROUND_SHORT[name]}: bal. acc. drop"] = (shift["none"]["balanced_accuracy"]
                                                                     - r["balanced_accuracy"])
        cam = audits.result(b, audits.CAM_STATS)
        if cam:
            row["CAM stained mass"] = cam["overall"]["stained"]["mass"]
            weakest = min(cam["per_class"].items(), key=lambda kv: kv[1]["stained"]["mass"])
            row["CAM stained mass, weakest class"] = f"{weakest[1]['stained']['mass']:.2f} ({weakest[0]})"
        for name, r in audits.result(b, audits.EXTERNAL, {}).items():
            pv = r.get("positive_vs_normal")
            if pv:
                auc = pv["roc_auc"]
                row[f"{name} ROC-AUC [95%, by {pv['bootstrap_unit']}]"] = (
                    f"{auc['value']:.3f} [{auc['ci95'][0]:.3f}-{auc['ci95'][1]:.3f}]")
                row[f"{name} OOD flagged"] = r["ood_flag_rate"]
        rows.append(row)
    return pd.DataFrame(rows)


def ood_compare_table(bundles) -> pd.DataFrame:
    """One row per bundle and image set: each OOD method's flag rate and AUROC (``leukoview oodscores``)."""
    rows = []
    for b in bundles:
        r = audits.result(b, audits.OOD_SCORES)
        if not r:
            continue
        for name, row in r["sets"].items():
            rows.append({"model": b.id, "image set": name,
                         **{f"{m} flagged": row[m]["flag_rate"] for m in r["methods"]},
                         **{f"{m} AUROC": row[m]["auroc"] for m in r["methods"]}})
    return pd.DataFrame(rows)


def audits_table(bundles: list[bundle.Bundle]) -> pd.DataFrame:
    """Which audits (:data:`leukoview.audits.REGISTRY`) each bundle carries."""
    return pd.DataFrame(audits.run_table(bundles))


def patients_line(b: bundle.Bundle, r: dict) -> str:
    """One sentence on a bundle's per-patient agreement (:data:`leukoview.audits.PATIENTS`)."""
    per = "; ".join(f"{src}: {v['patients']} patients, MAE {v['mae_points']:.1f} [{v['mae_ci95'][0]:.1f}-"
                    f"{v['mae_ci95'][1]:.1f}]" for src, v in (r.get("per_source") or {}).items())
    return (f"**{b.id}** on {r['patients']} test patients: mean absolute error {r['mae_points']:.1f} points "
            f"[{r['mae_ci95'][0]:.1f}-{r['mae_ci95'][1]:.1f}], bias {r['bias_points']:+.1f}, 95% limits of agreement "
            f"{r['limits_of_agreement'][0]:+.1f} to {r['limits_of_agreement'][1]:+.1f}; same side of the "
            f"{r['reference_percent']:.0f}% line for {r['same_side_of_line']:.0%} of patients" + (f" ({per})" if per
                                                                                                else "") + ".")


README_BEGIN, README_END = "<!-- results:begin (python -m leukoview compare --readme) -->", "<!-- results:end -->"


def _ci_text(m: dict, key: str, value: float) -> str:
    ci = m.get(f"{key}_ci95")
    return f"{value:.3f} [{ci[0]:.3f}-{ci[1]:.3f}]" if ci else f"{value:.3f}"


def readme_summary(bundles: list[bundle.Bundle]) -> str:
    """The README's results block, from the bundles' files only: the recommended model of each task (and the
    models it replaced) on its own test split, then every external set they were scored on."""
    from leukoview.primitives.tasks import TASKS

    keep = []
    for t in TASKS.values():
        ids = {t.recommended or f"{t.name}-efficientnet_lite0"}
        ids |= {TASKS[o].recommended for o in TASKS if TASKS[o].superseded_by == t.name and TASKS[o].recommended}
        keep += [b for b in bundles if b.id in ids and b not in keep]
    own = ["| model | task | test images | accuracy | balanced accuracy | sensitivity at threshold | "
           "specificity at threshold | ECE |", "|---|---|---|---|---|---|---|---|"]
    ext = ["| model | external set | images | normal cells called positive | positive, not flagged | "
           "own type (balanced) | positive vs normal ROC-AUC |", "|---|---|---|---|---|---|---|"]
    for b in keep:
        m, t = b.metrics, b.metrics["at_threshold"]
        own.append(f"| {b.id} | {b.task} | {m['n_images']} | {_ci_text(m, 'accuracy', m['accuracy'])} | "
                   f"{m['balanced_accuracy']:.3f} | {_ci_text(m, 'sensitivity', t['sensitivity'])} | "
                   f"{_ci_text(m, 'specificity', t['specificity'])} | {m['ece']:.3f} |")
        for name, r in audits.result(b, audits.EXTERNAL, {}).items():
            pv = r.get("positive_vs_normal")
            auc = (f"{pv['roc_auc']['value']:.3f} [{pv['roc_auc']['ci95'][0]:.3f}-{pv['roc_auc']['ci95'][1]:.3f}]"
                   if pv else "—")
            ext.append(f"| {b.id} | {name} | {r['images']} | {r['positive_decision_among_normal']['rate']:.1%} | "
                       f"{r['positive_not_flagged_among_normal']['rate']:.1%} | {r['balanced_own_type']:.3f} | {auc} |")
    return "\n".join([README_BEGIN, "", *own, "", *ext, "", README_END])


def replace_readme_block(text: str, block: str) -> str:
    """``text`` with its results block replaced by ``block``."""
    i, j = text.index(README_BEGIN), text.index(README_END) + len(README_END)
    return text[:i] + block + text[j:]


def adaptation_table(bundles: list[bundle.Bundle]) -> pd.DataFrame:
    """Adapted bundles: base vs adapted on the site's held-out cells (from each adapted card)."""
    rows = []
    for b in bundles:
        r = b.card.adapted
        if not r:
            continue
        for name in ("base", "adapted"):
            e = r["evaluation"][name]
            row = {"adapted model": b.id, "site": r["site"], "read by": r["base"]["id"] if name == "base" else b.id,
                   "held-out cells": e["cells"], "own type (balanced)": e["balanced_own_type"],
                   "normal cells called positive": (e.get("positive_among_normal") or {}).get("rate"),
                   "positive, no flag": (e.get("positive_unflagged_among_normal") or {}).get("rate"),
                   "recommended": r["recommended"] if name == "adapted" else None}
            row.update({f"{t} own type": v["own_type"] for t, v in e["own_type"].items()})
            rows.append(row)
    return pd.DataFrame(rows)


def readable(df: pd.DataFrame) -> pd.DataFrame:
    """A table for a page: missing values shown as an empty cell, never as 'None' or 'nan'."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else v)
    return out


def recommended_line(task: str, bundles: list[bundle.Bundle]) -> str:
    """The recommended model of a task and why it was chosen (empty when the task has none here)."""
    from leukoview.primitives.tasks import TASKS

    rec = next((b for b in bundles if is_recommended(b)), None)
    if rec is None:
        return ""
    why = TASKS[task].recommended_why if task in TASKS else ""
    return f"★ **Recommended for reviewers: {rec.id}**" + (f" — {why}." if why else ".")
