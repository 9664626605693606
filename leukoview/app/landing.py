"""Text and tables of the Home page, built from bundle cards and metrics (no Streamlit, no torch)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from leukoview import audits
from leukoview.models.bundle import Bundle
from leukoview.primitives.tasks import TASKS

if TYPE_CHECKING:  # Home renders without pandas (cold start); models_table imports it on use
    import pandas as pd

INTRO = """
**leukoview** helps hematology reviewers triage blood-smear images for leukemia and shows educators what a
decision threshold trades. Each model scores a *suspicion score*: the probability of the clinically positive
class(es) (malignant B-ALL subtypes, myeloblast, or ALL blast), compared with an operating threshold chosen for
sensitivity. Grad-CAM maps show where the network looked; an out-of-distribution flag warns when an image is
unlike the training data.

It is **not** a diagnostic device: the models are trained on small public datasets from few sites, and their
figures below come from held-out test splits of those same datasets.
"""

TABLE_NOTE = ("Figures are from each bundle's metrics.json on its held-out test split (split grouped by patient "
              "or by near-duplicate image, chosen before training). Brackets: 95% intervals, the wider of a "
              "bootstrap over patients or duplicate groups and an exact (Clopper-Pearson) per-image interval, so a "
              "perfect score still shows how small the test split is.")

PAGE_GUIDE = [
    ("Single Image", "upload, photograph or pick a sample image; see class probabilities, the decision at the "
                     "model's threshold — or 'cannot assess' when the image is unlike the training data, and no "
                     "score at all for what is not a blood-smear image — the located cell and a Grad-CAM overlay "
                     "with a faithfulness check."),
    ("Batch Review", "score a folder from the data root, an upload or a zip; review its cells in a gallery grouped "
                     "by predicted class (most suspicious first) with the cell and its Grad-CAM beside it; confirm, "
                     "reclassify, mark unidentified or for second review by button or keyboard (saved at once with "
                     "your name); the differential as pre-classified and as reviewed (blast % against the 20% "
                     "line); sign off and download the report; which images the model was trained on; the table "
                     "view and CSV export; per-patient summary for single-cell models."),
    ("Threshold Explorer", "move the threshold over the stored test predictions and watch the confusion matrix, "
                           "sensitivity/specificity, ROC/PR and, for teaching, what it means per 1,000 images "
                           "(or people, when the split is by patient)."),
    ("Model Comparison", "every bundle of the selected task side by side, with curves, per-class recall and a "
                         "paired McNemar test."),
]

SAMPLE_NOTE = ("Sample images (Single image page, 'Sample image' tab) are copied from the data root by "
               "`scripts/start.sh`; without it, `python -m leukoview sample-data` does the same.")


def where_to_start(bundles: list[Bundle]) -> str:
    """Which model to use for one's own slides and where to begin, from the recommended bundles found."""
    from leukoview.primitives.tasks import recommended_for

    found = {b.id for b in bundles}
    cells, fields = (rid if (rid := recommended_for(t)) in found else "" for t in ("wbc9", "all4"))
    lines = ["**Where to start with your own slides**"]
    if cells:
        lines.append(f"- **One white cell per image** (a CellaVision-style capture, 360 px or so): the leukocyte "
                     f"differential **{cells}** — nine cell types, blast is the positive class.")
    if fields:
        lines.append(f"- **A smear field with several lymphoid cells** (the Taleqani ALL kind): **{fields}** — "
                     "benign vs B-ALL subtypes; it gives no verdict on single-cell crops.")
    lines.append("- Begin on **Batch review**: choose the folder of one slide (a folder per patient gives the "
                 "per-patient blast %), score it, review the cells with the keys, sign off. On another laboratory's "
                 "cells, read the external rows on Home and the Model comparison page first: a model may read your "
                 "cells worse than its own test split says (**Adapt to this laboratory** on the batch page helps "
                 "once you have confirmed cells).")
    return "\n".join(lines)


RECOMMENDED_ARCH = "efficientnet_lite0"


def is_recommended(b: Bundle) -> bool:
    """The model a task ships for reviewers (the others are the zoo, baselines and comparison runs). A task
    superseded by another (wbc5 by the multi-source wbc9 differential) keeps its bundles for comparison only."""
    task = b.task
    if task in TASKS and TASKS[task].superseded_by:
        return False
    return b.id == ((TASKS[task].recommended if task in TASKS else "") or f"{task}-{RECOMMENDED_ARCH}")


def worse_than_chance(b: Bundle) -> list[str]:
    """The external sets on which a bundle ranks positive cells below normal ones (ROC-AUC interval below 0.5):
    such a model is never suggested for another lab's image."""
    out = []
    for name, r in (audits.result(b, audits.EXTERNAL, {}) or {}).items():
        auc = ((r.get("positive_vs_normal") or {}).get("roc_auc") or {})
        if auc.get("ci95") and auc["ci95"][1] < 0.5:
            out.append(name)
    return out


def picker_order(bundles: list[Bundle]) -> list[Bundle]:
    """Recommended models first (by task), then the rest by id."""
    return sorted(bundles, key=lambda b: (not is_recommended(b), b.id))


def _ci(m: dict, key: str) -> str:
    """The wider of the bootstrap interval (by patient or duplicate group) and the exact per-image one."""
    lo, hi = m.get(f"{key}_ci95", [float("nan")] * 2)
    if key in m.get("exact_ci95", {}):
        elo, ehi = m["exact_ci95"][key]
        lo, hi = min(lo, elo), max(hi, ehi)
    return f"[{lo:.3f}, {hi:.3f}]"


def model_rows(bundles: list[Bundle]) -> list[dict]:
    """One row per bundle: the figures with their intervals, as text."""
    rows = []
    for b in bundles:
        m, c = b.metrics, b.card
        t = m["at_threshold"]
        rows.append({"model": b.id, "task": c.task, "positive class(es)": ", ".join(b.positive),
                     "test images": m["n_images"],
                     "accuracy": f"{m['accuracy']:.4f} {_ci(m, 'accuracy')}",
                     "ROC-AUC": f"{m['roc_auc']:.4f} {_ci(m, 'roc_auc')}",
                     "sensitivity": f"{t['sensitivity']:.3f} {_ci(m, 'sensitivity')}",
                     "specificity": f"{t['specificity']:.3f} {_ci(m, 'specificity')}",
                     "ECE": f"{m['ece']:.4f}", "threshold": f"{b.threshold:.4g}"})
    return rows


def models_table(bundles: list[Bundle]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(model_rows(bundles))


def models_markdown(bundles: list[Bundle]) -> str:
    """The models table as Markdown (what Home shows; needs no pandas, so Home starts faster)."""
    rows = model_rows(bundles)
    if not rows:
        return ""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]).replace("|", "/") for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def model_summary(b: Bundle) -> str:
    c = b.card
    tr = c.training
    return "\n".join([
        f"- **Architecture:** {c.architecture} — {c.architecture_description}",
        f"- **Initialisation:** {c.pretrained_source or 'unknown'}",
        f"- **Classes:** {', '.join(b.classes)} (positive: {', '.join(b.positive)})",
        f"- **Input:** {input_summary(c.input)}",
        f"- **Operating threshold:** {b.threshold:.4g} — {c.threshold_rule}",
        f"- **Trained:** {tr.get('epochs_run', '?')} epochs (best {tr.get('best_epoch', '?')}), "
        f"{tr.get('wall_time_s', 0) / 60:.1f} min on {tr.get('device', '?')}",
        *[f"- **Another lab:** {external_line(r, name, ', '.join(b.positive))}"
          for name, r in audits.result(b, audits.EXTERNAL, {}).items()],
    ])


def input_summary(spec: dict) -> str:
    """What a model reads, from its card's input spec (networks: size and normalisation; classical models: the
    feature set; and whether the cell is located first)."""
    if "features" in spec:
        text = f"{spec.get('feature_description') or spec['features']} ({spec['size']} px)"
    else:
        text = f"{spec['size']} px, mean {spec['mean']}, std {spec['std']}"
    text += (f"; cell located first: {spec['locate'].get('what', '')}" if spec.get("locate") else
             "; the whole image")
    return text + (f"; colours normalised ({spec['colour'].get('what', spec['colour'].get('method', ''))})"
                   if spec.get("colour") else "")


def external_line(result: dict, name: str, positive_name: str) -> str:
    """One line on how a model did on an external set (``leukoview external``): false alarms among its normal
    cells and how many were read as their own type; for a set with clinically positive cells also how many of
    those were called positive and how the suspicion ranks them against the normal ones (ROC-AUC, interval)."""
    from leukoview.audits.external import unseen_types

    n, own = result["positive_decision_among_normal"], result["own_type_overall"]
    folders = result.get("per_folder") or {}
    unseen = unseen_types(folders) if folders else result.get("unseen_types") or []
    text = (f"on {name} ({result['images']} cells of another lab), {n['rate']:.0%} of normal cells were called "
            f"{positive_name} ({n['count']}/{n['of']})")
    if own.get("of"):
        text += f" and {own['rate']:.0%} their own type"
    if unseen:
        text += f" (types it was not trained on: {', '.join(unseen)})"
    positive = [r for r in folders.values() if r.get("clinically_positive")]
    if positive:
        k, of = sum(r["positive_decision"]["count"] for r in positive), sum(r["images"] for r in positive)
        text += f"; {k / of:.0%} of its positive cells were called positive ({k}/{of})" if of else ""
    auc = (result.get("positive_vs_normal") or {}).get("roc_auc")
    if auc:
        lo, hi = auc["ci95"]
        text += (f"; the suspicion ranks positive above normal cells with ROC-AUC {auc['value']:.2f} "
                 f"[{lo:.2f}–{hi:.2f}]" + (" (worse than chance)" if hi < 0.5 else ""))
    flagged = result.get("ood_flag_rate")
    if flagged is not None and flagged == flagged:  # not NaN
        text += f"; {flagged:.0%} flagged out of distribution"
    return text + "."


def split_summary(b: Bundle) -> str:
    c = b.card
    d = c.dataset
    counts = d.get("counts", {})
    lines = [f"- **Dataset:** {d.get('name', '')} — {d.get('description', '')}",
             f"- **Licence / credit:** {d.get('licence', '')}",
             f"- **Split:** {c.split.get('grouping', '')} (hash `{c.split_hash}`)"]
    for part in ("train", "val", "test"):
        if part in counts:
            lines.append(f"- **{part}:** " + ", ".join(f"{k} {v}" for k, v in counts[part].items()))
    return "\n".join(lines)


def shortcut_notes(audits: dict, tasks: list[str]) -> list[tuple[str, str]]:
    """(level, text) of the shortcut audit of each task that has shipped models (see leukoview.audits.shortcuts)."""
    out = []
    for task in tasks:
        a = audits.get(task)
        if a:
            out.append((a["level"], f"**Shortcut audit, {task}:** {a['message']}"))
    return out
