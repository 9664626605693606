"""Command handlers of the audits (each stores its result in the bundle) and the dataset leakage audit. Called by
:mod:`leukoview.__main__` (which builds the parser)."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _cmd_audit(a) -> int:
    from leukoview.models.datasets import load_dataset
    from leukoview.models.splits import leakage_audit, make_split

    ds = load_dataset(a.dataset, Path(a.data_root) if a.data_root else None, positive=a.positive or ())
    split = make_split(ds, seed=a.split_seed)
    report = leakage_audit(ds, split)
    if a.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"leakage audit of {report['dataset']}: {report['images']} images"
          + (f", {report['patients']} patients" if report["patients"] else ", no patient ids"))
    print(f"  exact-duplicate groups: {report['exact_duplicate_groups']}"
          + (f" (e.g. {', '.join(report['exact_duplicate_examples'][0])})" if report["exact_duplicate_examples"]
             else ""))
    if report["exact_duplicates_across_classes"]:
        print(f"  WARNING exact duplicates with different labels: {report['exact_duplicates_across_classes']}")
    print(f"  images in near-duplicate pairs (not exact): {report['near_duplicate_images']}")
    print(f"  groups kept together by the split: {report['groups_of_two_or_more']} (largest {report['largest_group']})")
    print(f"  groups crossing our train/val/test split: {report['groups_crossing_our_split']}")
    if "groups_crossing_published_split" in report:
        print(f"  groups crossing the publisher's split: {report['groups_crossing_published_split']}"
              + ("  <- the published split leaks near-copies" if report["groups_crossing_published_split"] else ""))
    if "patients_in_more_than_one_split" in report:
        print(f"  patients in more than one split: {report['patients_in_more_than_one_split']}")
    classes = sorted({c for s in report["class_balance"].values() for c in s})
    print("  class balance:  " + "  ".join(f"{c:>14}" for c in classes))
    for s, counts in report["class_balance"].items():
        print(f"  {s:>13}:  " + "  ".join(f"{counts.get(c, 0):>14}" for c in classes))
    return 0


def _cmd_shortcuts(a) -> int:
    from leukoview import audits
    from leukoview.models.bundle import load_bundle

    for folder in a.bundles:
        r = audits.SHORTCUTS.run(folder, progress=not a.quiet)
        b = load_bundle(folder)
        print(f"{r['task']} ({b.id} split, {r['n_train']} train / {r['n_test']} test images, chance "
              f"{r['chance']:.3f}):")
        for name, g in r["groups"].items():
            print(f"  {name:<20} balanced accuracy {g['balanced_accuracy']:.3f}  accuracy {g['accuracy']:.3f}  "
                  f"positive-class AUC {g['positive_roc_auc']:.3f}  ({g['classifier']})")
        print(f"  model {b.id}: balanced accuracy {r['model_balanced_accuracy']:.3f}")
        print(("WARNING: " if r["level"] == "high" else "") + r["message"])
        print(f"  -> {folder}/metrics.json[shortcuts]")
    return 0


def _cmd_camstats(a) -> int:
    from leukoview import audits
    from leukoview.primitives.segment import REGIONS

    for folder in a.bundles:
        stats = audits.CAM_STATS.run(folder, max_images=a.max_images, progress=not a.quiet)
        print(f"{folder}: {stats['images']} test images, {stats['method']}; share of map mass (share of area)")
        for cls, part in {"all": stats["overall"], **stats["per_class"]}.items():
            print(f"  {cls:<16} " + "  ".join(f"{r} {part[r]['mass']:.3f} ({part[r]['area']:.3f})"
                                             for r in REGIONS))
    return 0


def _cmd_shift(a) -> int:
    from leukoview import audits

    # the test split's result is the one the pages show; a validation run is kept beside it for recipe choices
    audit = audits.SHIFT if a.split == "test" else audits.SHIFT_VAL
    for folder in a.bundles:
        try:
            r = audit.run(folder, shifts=a.only, max_images=a.max_images, progress=not a.quiet)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"{folder}: {r['images']} {a.split} images re-rendered; at threshold {r['threshold']:.4g}")
        for name, m in r["results"].items():
            print(f"  {name:<28} accuracy {m['accuracy']:.4f}  balanced {m['balanced_accuracy']:.4f}  "
                  f"AUC {m['roc_auc']:.4f}  sensitivity {m['sensitivity']:.3f}  specificity {m['specificity']:.3f}  "
                  f"OOD-flagged {m['ood_flag_rate']:.1%}")
    return 0


def _cmd_oodeval(a) -> int:
    from leukoview import audits

    for folder in a.bundles:
        r = audits.OOD_EVAL.run(folder, progress=not a.quiet)
        print(f"{folder}: OOD flag (threshold {r['threshold']:.3g})")
        for name, m in r["sets"].items():
            print(f"  {name:<44} {m['flagged']:>4} / {m['images']:<4} flagged ({m['flag_rate']:>6.1%}), "
                  f"{m['gated']:>4} refused by the input gate, {m['verdicts']:>4} would get a verdict; called "
                  f"positive {m['called_positive']:>4}, of them neither flagged nor gated "
                  f"{m['called_positive_unflagged']:>4}")
    return 0


def _cmd_external(a) -> int:
    from tqdm import tqdm

    from leukoview import audits
    from leukoview.audits import external
    from leukoview.models.bundle import load_bundle

    mapping = external.parse_mapping(a.map)
    name = a.name or Path(a.folder).resolve().name
    for folder in a.bundles:
        bar = tqdm(total=0, unit="img", desc=f"{Path(folder).name}", disable=a.quiet)

        def progress(done, total, bar=bar):
            bar.total = total
            bar.update(done - bar.n)

        r = audits.EXTERNAL.run(folder, Path(a.folder), name=name, mapping=mapping,
                                positive_folders=tuple(a.positive_folders or ()), progress=progress)
        bar.close()
        b = load_bundle(folder)
        print(f"{b.id} on {name} ({r['images']} images, threshold {r['threshold']:.4g}):")
        print(f"  {'folder':<14} {'n':>4}  {'model class':<16} {'own type':>16}  {'positive':>8}  "
              f"{'pos. unflagged':>14}  {'OOD':>6}  top prediction")
        for k, v in r["per_folder"].items():
            own = (f"{v['own_type']['rate']:.3f} [{v['own_type']['ci95'][0]:.2f}-{v['own_type']['ci95'][1]:.2f}]"
                   if v["own_type"] else "unseen type")
            print(f"  {k:<14} {v['images']:>4}  {str(v['mapped_to'] or '—'):<16} {own:>16}  "
                  f"{v['positive_decision']['rate']:>8.1%}  {v['positive_not_flagged']['rate']:>14.1%}  "
                  f"{v['ood_flagged']['rate']:>6.1%}  {v['top_prediction']}")
        if r.get("positive_vs_normal"):
            rk = r["positive_vs_normal"]
            print(f"  positive vs normal cells ({rk['positive_cells']} / {rk['normal_cells']}"
                  + (f", {rk['patients']} patients" if rk["patients"] else "") + f"; 95% intervals by "
                  f"{rk['bootstrap_unit']}): " + ", ".join(
                      f"{k} {rk[k]['value']:.3f} [{rk[k]['ci95'][0]:.3f}-{rk[k]['ci95'][1]:.3f}]"
                      for k in ("roc_auc", "sensitivity", "specificity")))
        n, u = r["positive_decision_among_normal"], r["positive_not_flagged_among_normal"]
        print(f"  normal cells: {n['rate']:.1%} positive ({n['count']}/{n['of']}), {u['rate']:.1%} positive and "
              f"not flagged; own type overall {r['own_type_overall']['rate']:.3f}, balanced "
              f"{r['balanced_own_type']:.3f} -> {folder}/metrics.json[external][{name}]")
    return 0


def _cmd_seen(a) -> int:
    from leukoview import audits
    from leukoview.models.seen import SEEN

    for folder in a.bundles:
        table = audits.SEEN_AUDIT.run(folder, progress=not a.quiet)
        print(f"{Path(folder).name}: {len(table['split'])} train and validation images recorded -> {folder}/{SEEN}")
    return 0


def _cmd_wrongtask(a) -> int:
    from leukoview import audits

    for folder in a.bundles:
        info = audits.WRONG_TASK.run(folder, per_dataset=a.per_dataset, isolated_renders=a.isolated_renders,
                                     generated=a.generated, progress=not a.quiet)
        print(f"{folder}: wrong-task detector fitted on {info['own_train_images']} own training images and "
              f"{info['wrong_task_images']} of {', '.join(info['wrong_task_datasets'])} (fit accuracy "
              f"{info['fit_accuracy']:.3f}); threshold {info['threshold']:.3f} flags {info['val_flag_rate']:.1%} of "
              "the own validation split. Run `oodeval` to measure it on images it was not fitted on.")
    return 0


def _cmd_palette(a) -> int:
    from leukoview import audits

    for folder in a.bundles:
        info = audits.PALETTE.run(folder, progress=not a.quiet)
        print(f"{folder}: palette check on {info['reference_images']} own training images; threshold "
              f"{info['threshold']:.2f} flags {info['val_flag_rate']:.1%} of the own validation split "
              f"({info['val_combined_flag_rate']:.1%} with the other flags). Run `oodeval` to measure it.")
    return 0


def _cmd_oodscores(a) -> int:
    from leukoview import audits

    for folder in a.bundles:
        r = audits.OOD_SCORES.run(folder, progress=not a.quiet)
        print(f"{folder}: OOD scores, each thresholded at the 99th percentile of validation (flag rate / AUROC "
              "against the own test split)")
        print(f"  {'image set':<44} " + "  ".join(f"{m:>18}" for m in r["methods"]))
        for name, row in r["sets"].items():
            print(f"  {name:<44} " + "  ".join(f"{row[m]['flag_rate']:>8.1%} / {row[m]['auroc']:>7.3f}"
                                              for m in r["methods"]))
    return 0


def _cmd_patients(a) -> int:
    from leukoview import audits

    for folder in a.bundles:
        r = audits.PATIENTS.run(folder)
        if r is None:
            print(f"{Path(folder).name}: its test split has no patient ids; nothing to compare", file=sys.stderr)
            return 2
        print(f"{Path(folder).name}: {r['patients']} test patients; blast % mean absolute error "
              f"{r['mae_points']:.2f} points "
              f"[{r['mae_ci95'][0]:.2f}-{r['mae_ci95'][1]:.2f}], bias {r['bias_points']:+.2f}, limits of agreement "
              f"{r['limits_of_agreement'][0]:+.1f} to {r['limits_of_agreement'][1]:+.1f}; same side of the "
              f"{r['reference_percent']:.0f}% line for {r['same_side_of_line']:.0%} -> {folder}/metrics.json")
    return 0


def _cmd_measure(a) -> int:
    from leukoview import audits

    for folder in a.bundles:
        r = audits.LATENCY.run(folder, runs=a.runs, threads=a.threads)
        print(f"{folder}: median {r['median_ms']} ms/image (p90 {r['p90_ms']}) on {r['threads']} threads, "
              f"{r['runtime']}")
    return 0
