"""Command handlers of the audits (each stores its result in the bundle) and the dataset leakage audit. Called by
:mod:`leukoview.__main__` (which builds the parser)."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _cmd_audit(a) -> int:
    from .datasets import leakage_audit, load_dataset, make_split

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
    from . import settings, shortcuts
    from .bundle import load_bundle

    root = settings.data_root()
    for folder in a.bundles:
        b = load_bundle(folder)
        r = shortcuts.audit(b, root, progress=not a.quiet)
        shortcuts.write(Path(folder), r)
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
    from . import camstats, settings
    from .segment import REGIONS

    for folder in a.bundles:
        stats = camstats.bundle_stats(Path(folder), settings.data_root(), max_images=a.max_images,
                                      progress=not a.quiet)
        camstats.write(Path(folder), stats)
        print(f"{folder}: {stats['images']} test images, {stats['method']}; share of map mass (share of area)")
        for cls, part in {"all": stats["overall"], **stats["per_class"]}.items():
            print(f"  {cls:<16} " + "  ".join(f"{r} {part[r]['mass']:.3f} ({part[r]['area']:.3f})"
                                             for r in REGIONS))
    return 0


def _cmd_shift(a) -> int:
    from . import settings, shift

    shifts = tuple(a.only) if a.only else tuple(shift.SHIFTS)
    for folder in a.bundles:
        try:
            r = shift.shift_eval(Path(folder), settings.data_root(), shifts=shifts, max_images=a.max_images,
                                 split=a.split, progress=not a.quiet)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        # the test split's result is the one the pages show; a validation run is kept beside it for recipe choices
        r = shift.store(Path(folder), r, partial=bool(a.only))
        print(f"{folder}: {r['images']} {a.split} images re-rendered; at threshold {r['threshold']:.4g}")
        for name, m in r["results"].items():
            print(f"  {name:<28} accuracy {m['accuracy']:.4f}  balanced {m['balanced_accuracy']:.4f}  "
                  f"AUC {m['roc_auc']:.4f}  sensitivity {m['sensitivity']:.3f}  specificity {m['specificity']:.3f}  "
                  f"OOD-flagged {m['ood_flag_rate']:.1%}")
    return 0


def _cmd_oodeval(a) -> int:
    from . import audits, oodeval, settings

    for folder in a.bundles:
        r = oodeval.ood_eval(Path(folder), settings.data_root(), progress=not a.quiet)
        audits.store(Path(folder), audits.OOD_EVAL, r)
        print(f"{folder}: OOD flag (threshold {r['threshold']:.3g})")
        for name, m in r["sets"].items():
            print(f"  {name:<44} {m['flagged']:>4} / {m['images']:<4} flagged ({m['flag_rate']:>6.1%}), "
                  f"{m['gated']:>4} refused by the input gate, {m['verdicts']:>4} would get a verdict; called "
                  f"positive {m['called_positive']:>4}, of them neither flagged nor gated "
                  f"{m['called_positive_unflagged']:>4}")
    return 0


def _cmd_external(a) -> int:
    from tqdm import tqdm

    from . import external
    from .bundle import load_bundle

    mapping = external.parse_mapping(a.map)
    name = a.name or Path(a.folder).resolve().name
    for folder in a.bundles:
        bar = tqdm(total=0, unit="img", desc=f"{Path(folder).name}", disable=a.quiet)

        def progress(done, total, bar=bar):
            bar.total = total
            bar.update(done - bar.n)

        r = external.external_eval(Path(folder), Path(a.folder), mapping=mapping,
                                   positive_folders=tuple(a.positive_folders or ()), progress=progress)
        bar.close()
        external.write(Path(folder), name, r)
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
    from . import audits, bundle, settings
    from .datasets import load_dataset
    from .seen import SEEN, seen_for

    for folder in a.bundles:
        b = bundle.load_bundle(folder)
        table = seen_for(load_dataset(b.task, settings.data_root()), b.split(), progress=not a.quiet)
        audits.store(folder, audits.SEEN_AUDIT, table)
        print(f"{b.id}: {len(table['split'])} train and validation images recorded -> {folder}/{SEEN}")
    return 0


GENERATED_SEED = 101  # wrongtask --generated: not oodeval's seed


def _cmd_wrongtask(a) -> int:
    from . import settings, wrongtask

    for folder in a.bundles:
        generated = None
        if a.generated:  # another seed than oodeval's (0): the evaluation's pictures stay unseen
            from . import oodeval

            generated = oodeval.not_cells(a.generated, seed=GENERATED_SEED)
        info = wrongtask.fit(Path(folder), settings.data_root(), per_dataset=a.per_dataset,
                             isolated_renders=a.isolated_renders, generated=generated, progress=not a.quiet)
        print(f"{folder}: wrong-task detector fitted on {info['own_train_images']} own training images and "
              f"{info['wrong_task_images']} of {', '.join(info['wrong_task_datasets'])} (fit accuracy "
              f"{info['fit_accuracy']:.3f}); threshold {info['threshold']:.3f} flags {info['val_flag_rate']:.1%} of "
              "the own validation split. Run `oodeval` to measure it on images it was not fitted on.")
    return 0


def _cmd_palette(a) -> int:
    from . import palette, settings

    for folder in a.bundles:
        info = palette.fit(Path(folder), settings.data_root(), progress=not a.quiet)
        print(f"{folder}: palette check on {info['reference_images']} own training images; threshold "
              f"{info['threshold']:.2f} flags {info['val_flag_rate']:.1%} of the own validation split "
              f"({info['val_combined_flag_rate']:.1%} with the other flags). Run `oodeval` to measure it.")
    return 0


def _cmd_oodscores(a) -> int:
    from . import oodscores, settings

    for folder in a.bundles:
        r = oodscores.compare_ood(Path(folder), settings.data_root(), progress=not a.quiet)
        oodscores.write(Path(folder), r)
        print(f"{folder}: OOD scores, each thresholded at the 99th percentile of validation (flag rate / AUROC "
              "against the own test split)")
        print(f"  {'image set':<44} " + "  ".join(f"{m:>18}" for m in r["methods"]))
        for name, row in r["sets"].items():
            print(f"  {name:<44} " + "  ".join(f"{row[m]['flag_rate']:>8.1%} / {row[m]['auroc']:>7.3f}"
                                              for m in r["methods"]))
    return 0


def _cmd_patients(a) -> int:
    from . import audits, differential
    from .bundle import load_bundle

    for folder in a.bundles:
        b = load_bundle(folder)
        r = differential.bundle_agreement(b)
        if r is None:
            print(f"{b.id}: its test split has no patient ids; nothing to compare", file=sys.stderr)
            return 2
        sources = sorted(set(b.predictions().get("source", [])) - {""})
        per_source = {s: differential.bundle_agreement(b, source=s) for s in sources}
        r["per_source"] = {s: v for s, v in per_source.items() if v is not None and v["patients"] > 0}
        audits.store(folder, audits.PATIENTS, r)
        print(f"{b.id}: {r['patients']} test patients; blast % mean absolute error {r['mae_points']:.2f} points "
              f"[{r['mae_ci95'][0]:.2f}-{r['mae_ci95'][1]:.2f}], bias {r['bias_points']:+.2f}, limits of agreement "
              f"{r['limits_of_agreement'][0]:+.1f} to {r['limits_of_agreement'][1]:+.1f}; same side of the "
              f"{r['reference_percent']:.0f}% line for {r['same_side_of_line']:.0%} -> {folder}/metrics.json")
    return 0


def _cmd_measure(a) -> int:
    from .latency import measure_latency

    for folder in a.bundles:
        r = measure_latency(Path(folder), runs=a.runs, threads=a.threads)
        print(f"{folder}: median {r['median_ms']} ms/image (p90 {r['p90_ms']}) on {r['threads']} threads, "
              f"{r['runtime']}")
    return 0
