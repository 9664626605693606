"""Command line: ``python -m leukoview COMMAND …`` (``--help`` on each).

Commands: ``train`` (a network or classical model -> bundle), ``reevaluate`` (post-training steps from shipped
weights), ``refit-head`` (a cell-level model's classifier refitted on whole images), ``audit`` (dataset
leakage), ``score`` (a folder -> CSV), ``models`` (list and verify bundles),
``compare`` (the comparison tables), the audits ``shortcuts``, ``camstats``, ``shift``, ``oodeval``,
``oodscores`` (alternative OOD scores), ``wrongtask`` (the wrong-task detector), ``palette`` (the colour
check), ``external`` (a labelled
folder from another lab), ``seen``
(training-set membership) and ``measure`` (each writes into the bundle), and ``sample-data`` (the app's sample
images). The speed benchmark is ``python -m bench``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_train(a) -> int:
    from .train import TrainConfig, fit

    overrides = {k: getattr(a, k) for k in ("dataset", "arch", "data_root", "out", "epochs", "batch_size", "lr",
                                             "seed", "max_per_class", "threads", "workers", "device", "input_size",
                                             "min_specificity", "features")}
    if a.positive:
        overrides["positive"] = a.positive
    if a.no_pretrained:
        overrides["pretrained"] = False
    cfg = TrainConfig.from_file(a.config, **overrides)
    from . import classical, classical_train

    folder = (classical_train.fit if classical.is_classical(cfg.arch) else fit)(cfg, progress=not a.quiet)
    from .bundle import load_bundle
    from .tracking import log_bundle

    if not a.no_track and (run_id := log_bundle(folder)):
        print(f"MLflow run {run_id} (experiment leukoview)")

    b = load_bundle(folder)
    m = b.metrics
    print(f"{b.id}: test accuracy {m['accuracy']:.4f}, ROC-AUC {m['roc_auc']:.4f}, sensitivity "
          f"{m['at_threshold']['sensitivity']:.3f} / specificity {m['at_threshold']['specificity']:.3f} at "
          f"threshold {b.threshold:.4g}, ECE {m['ece']:.4f} -> {folder}")
    return 0


def _cmd_reevaluate(a) -> int:
    from .bundle import load_bundle
    from .train import reevaluate

    for folder in a.bundles:
        reevaluate(Path(folder), progress=not a.quiet, min_specificity=a.min_specificity)
        m = load_bundle(folder).metrics
        print(f"{folder}: test accuracy {m['accuracy']:.4f}, ROC-AUC {m['roc_auc']:.4f}, sensitivity "
              f"{m['at_threshold']['sensitivity']:.3f} / specificity {m['at_threshold']['specificity']:.3f}")
    return 0


def _cmd_refit_head(a) -> int:
    from .bundle import load_bundle
    from .train import refit_field_head

    try:
        folder = refit_field_head(Path(a.bundle), Path(a.out), variant=a.variant, swaps=a.swaps,
                                  max_cells=a.max_cells, progress=not a.quiet)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    b = load_bundle(folder)
    m = b.metrics
    print(f"{b.id}: field head C={b.card.head['C']:g}; test accuracy {m['accuracy']:.4f}, ROC-AUC "
          f"{m['roc_auc']:.4f}, sensitivity {m['at_threshold']['sensitivity']:.3f} / specificity "
          f"{m['at_threshold']['specificity']:.3f}, ECE {m['ece']:.4f} -> {folder}")
    return 0


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


def _cmd_score(a) -> int:
    from tqdm import tqdm

    from .predict import SCORE_CHUNK, Predictor, score_folder

    folder = Path(a.folder)
    if not folder.is_dir():
        print(f"error: {folder} is not a folder", file=sys.stderr)
        return 2
    predictor = Predictor(a.bundle)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if a.engine == "ray":
        try:
            from .scale import score_ray
        except ImportError as e:
            print(f"error: --engine ray needs the scale-out extra ({e.name}): pip install -r requirements-scale.txt",
                  file=sys.stderr)
            return 2
        bar = tqdm(total=0, unit="img", desc="scoring (ray)")

        def ray_progress(st):
            bar.total = st["total"]
            bar.update(st["done_before"] + st["done"] - bar.n)
            bar.set_postfix(rate=f"{st['rate_per_s']:.1f}/s", eta=f"{st['eta_s'] or 0:.0f}s")

        try:
            df = score_ray(folder, predictor.bundle.path, out, actors=a.actors, progress=ray_progress)
        except KeyboardInterrupt:
            bar.close()
            print(f"interrupted: the finished images are kept in {out.with_suffix('.parts')}; run the same command "
                  "again to go on", file=sys.stderr)
            return 130
        bar.close()
    else:
        bar = tqdm(total=0, unit="img", desc="scoring")

        def progress(done, total):
            bar.total = total
            bar.update(done - bar.n)

        df = score_folder(folder, predictor, batch_size=a.batch_size or SCORE_CHUNK, progress=progress)
        bar.close()
        df.to_csv(out, index=False)
    bad = int((df["error"] != "").sum())
    counts = df["decision"].value_counts()
    n_in_training = int(df["in_training"].isin(["train", "val"]).sum())
    print(f"{len(df)} files scored with {predictor.bundle.id} (threshold {predictor.threshold:.4g}): "
          f"{counts.get('positive', 0)} positive, {counts.get('negative', 0)} negative, "
          f"{counts.get('cannot assess', 0)} cannot assess (out of distribution), {bad} unreadable"
          + (f"; {n_in_training} seen in training (not evidence of performance)" if n_in_training else "")
          + f" -> {out}")
    if len(predictor.classes) > 2:  # a differential count means something for a multi-type model
        from .batch import differential

        table, summary = differential(df, predictor.classes, predictor.bundle.positive)
        path = out.with_name(out.stem + "_differential.csv")
        table.assign(percent=table["percent"].round(2)).to_csv(path, index=False)
        typed = table.iloc[:-1]  # the last row is the unidentified cells
        print(f"differential ({summary['classed']} classed cells, {summary['unidentified']} unidentified and left "
              "out of the %): " + ", ".join(f"{r.type} {r.percent:.1f}%" for r in typed.itertuples() if r.count))
        print(f"{' + '.join(summary['positive_types'])}: {summary['positive_percent']:.1f}% of classed cells "
              f"({'at or above' if summary['at_or_above_reference'] else 'below'} the "
              f"{summary['reference_percent']:.0f}% line) -> {path}")
    from .differential import REFERENCE, per_patient

    patients = per_patient(df, predictor.bundle.positive)
    if len(patients):  # images carry patients (a folder per patient, or ids in the names)
        path = out.with_name(out.stem + "_patients.csv")
        patients.assign(positive_percent=patients["positive_percent"].round(2)).to_csv(path, index=False)
        print(f"{len(patients)} patients; {int(patients['at_or_above_line'].sum())} at or above the "
              f"{100 * REFERENCE:.0f}% line ({' + '.join(predictor.bundle.positive)} among classed cells) -> {path}")
    return 0


def _cmd_models(a) -> int:
    from .bundle import bundle_problems, list_bundles

    for b in list_bundles(verify=True):
        m = b.metrics
        print(f"{b.id:<32} {b.card.architecture:<20} classes={len(b.classes)} threshold={b.threshold:.4g} "
              f"acc={m['accuracy']:.4f} auc={m['roc_auc']:.4f} sens={m['at_threshold']['sensitivity']:.3f} "
              f"spec={m['at_threshold']['specificity']:.3f}")
    for name, why in bundle_problems().items():
        print(f"{name:<32} NOT USABLE: {why}")
    return 0


BRIEF_COLUMNS = ["model", "kind", "ImageNet init", "parameters", "size (MB)", "input px", "epochs", "accuracy",
                 "balanced accuracy", "ROC-AUC", "sensitivity", "specificity", "ECE", "training time (min)",
                 "CPU latency (ms/img)"]


def _section_table(section: str, bundles, *, brief: bool = False):
    """The comparison page's other tables: shift test, Grad-CAM mass, OOD evaluation (``brief``: one row a model)."""
    from . import compare

    if section == "shift":
        wide = compare.balanced_accuracy_by_shift(bundles)
        return wide if wide.empty else wide.reset_index()
    if section == "cam":
        return compare.cam_table(bundles)
    if section == "external":
        return compare.external_table(bundles)
    if section == "cells":
        return compare.cells_table(bundles)
    return compare.ood_summary(bundles) if brief else compare.ood_table(bundles)


def _cmd_compare(a) -> int:
    from .bundle import list_bundles
    from .compare import comparison_table, markdown_table

    folders = [Path(d) for d in a.models_dir] if a.models_dir else [None]
    found = [b for folder in folders for b in list_bundles(folder, verify=not a.records)
             if (not a.task or b.task == a.task) and (not a.model or b.id in a.model)]
    if a.model:
        if missing := sorted(set(a.model) - {b.id for b in found}):
            print("no such bundle: " + ", ".join(missing))
            return 1
        found.sort(key=lambda b: a.model.index(b.id))  # an ablation table's rows in the order asked for
    if not found:
        print("no bundles" + (f" for task {a.task}" if a.task else ""))
        return 1
    if a.readme:
        from .compare import readme_summary, replace_readme_block

        readme = Path(__file__).resolve().parents[1] / "README.md"
        readme.write_text(replace_readme_block(readme.read_text(), readme_summary(found)))
        print(f"results block rewritten from {len(found)} bundles -> {readme}")
        return 0
    if a.section != "models":
        table = _section_table(a.section, found, brief=a.brief)
        print(markdown_table(table) if a.markdown else table.to_string(index=False))
        return 0
    table = comparison_table(found).drop(columns=["split"])
    if a.brief:
        table = table[[c for c in BRIEF_COLUMNS if c in table.columns]]
    print(markdown_table(table) if a.markdown else table.to_string(index=False))
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


def _cmd_adapt(a) -> int:
    from tqdm import tqdm

    from . import adapt
    from .bundle import BundleError, load_bundle

    try:
        base = load_bundle(a.bundle)
        if a.folder:
            mapping = dict(m.split("=", 1) for m in a.map or [])
            cells = adapt.site_from_folder(Path(a.folder), base.classes, mapping=mapping)
        else:
            from .review import ReviewStore

            cells = adapt.site_from_reviews(ReviewStore(Path(a.store) if a.store else None), base.classes)
        out = Path(a.out) if a.out else base.path.parent / f"{base.id}-{a.site}"
        bar = tqdm(total=100, unit="%", disable=a.quiet)

        def progress(fraction, what, bar=bar):
            bar.set_description(what)
            bar.update(int(100 * fraction) - bar.n)

        folder = adapt.adapt(a.bundle, cells, site=a.site, out=out, seed=a.seed, progress=progress,
                             source="folder" if a.folder else "reviews", min_per_type=a.min_per_type)
        bar.close()
    except (adapt.AdaptError, BundleError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    b = load_bundle(folder)
    r = b.card.adapted
    ev = r["evaluation"]
    print(f"{b.id}: adapted to {a.site} on {sum(r['cells_used'].values())} cells "
          f"({', '.join(f'{k} {v}' for k, v in r['cells_used'].items())}); checked on "
          f"{sum(r['cells_evaluated'].values())} held-out cells of the site")
    for name in ("base", "adapted"):
        e = ev[name]
        fa = e.get("positive_among_normal")
        print(f"  {name:<8} own type (balanced) {e['balanced_own_type']:.3f}  "
              + "  ".join(f"{t} {v['own_type']:.2f}" for t, v in e["own_type"].items())
              + (f"  normal cells called positive {fa['rate']:.1%} ({fa['count']}/{fa['of']})" if fa else ""))
    print(("  " if r["recommended"] else "  WARNING: ") + r["verdict"])
    from .tracking import log_bundle

    if not a.no_track and (run_id := log_bundle(folder)):
        print(f"  MLflow run {run_id}")
    return 0


def _cmd_users(a) -> int:
    import getpass

    from . import users

    try:
        if a.action == "add":
            if a.password_stdin:
                password = sys.stdin.readline().rstrip("\n")
            else:
                password = getpass.getpass(f"password for {a.name}: ")
                if getpass.getpass("again: ") != password:
                    print("error: the two passwords differ; nothing was written", file=sys.stderr)
                    return 2
            users.add(a.name, a.role, password)
            print(f"{a.name} ({a.role}) added to {users.users_file()}; sign-in is now required in the app")
        elif a.action == "remove":
            print(f"{a.name}: {'removed' if users.remove(a.name) else 'no such user'}")
        else:
            for name, u in sorted(users.load().items()):
                print(f"{name:<32} {u['role']:<10} since {u['created']}")
    except users.UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _cmd_audit_trail(a) -> int:
    from .review import ReviewStore, ReviewStoreError

    try:
        r = ReviewStore(Path(a.store) if a.store else None).verify()
    except ReviewStoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if r["ok"]:
        print(f"audit trail intact: {r['entries']} entries; head {r['head']}")
        return 0
    print(f"AUDIT TRAIL BROKEN: {r['problem']}", file=sys.stderr)
    return 1


def _cmd_serve(a) -> int:
    import os

    try:
        from .api import TOKEN_ENV, serve
    except ImportError as e:
        print(f"error: serving needs the API extra ({e.name} is missing): pip install -r requirements.txt",
              file=sys.stderr)
        return 2
    if a.host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get(TOKEN_ENV):
        print(f"warning: listening on {a.host} without {TOKEN_ENV}: anyone who reaches this port can score images",
              file=sys.stderr)
    serve(host=a.host, port=a.port, bundle=a.bundle)
    return 0


def _cmd_card_migrate(a) -> int:
    from .bundle import BundleError, migrate_card

    for folder in a.bundles:
        try:
            print(f"{folder}: {'migrated' if migrate_card(folder) else 'already current'}")
        except BundleError as e:
            print(f"{folder}: {e}", file=sys.stderr)
            return 2
    return 0


def _cmd_sample_data(a) -> int:
    from .samples import fill_sample_data, write_manifest

    if a.make_manifest:
        path = write_manifest(per_class=a.per_class)
        print(f"manifest written: {path}")
    copied, missing = fill_sample_data(Path(a.data_root) if a.data_root else None)
    print(f"{copied} sample images copied into sample_data/; {len(missing)} not found in the data root")
    for m in missing:
        print(f"  missing: {m}")
    return 0 if not missing else 1


def _audit_parser(sub, name: str):
    """An audit's sub-command, its help from the audit registry (what it measures, where the result is stored)."""
    from .audits import REGISTRY

    a = REGISTRY[name]
    return sub.add_parser(name, help=f"audit: {a.what} (stored in the bundle: {a.where})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m leukoview", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an architecture on a dataset and write a bundle")
    t.add_argument("--config", help="YAML or JSON file of TrainConfig values (flags override it)")
    t.add_argument("--dataset", help="all4, wbc5, cnmc or folder:<path>")
    t.add_argument("--positive", nargs="+", help="positive classes (folder datasets)")
    t.add_argument("--arch", help="a network of the registry (python -m leukoview models --archs) or a classical "
                   "model: svc, xgboost, lda, ridge, ridge_cv")
    t.add_argument("--features", help="classical models: pixels_hist (default) or lite0_embed")
    t.add_argument("--data-root", dest="data_root")
    t.add_argument("--out", help="bundle folder (default models/<dataset>-<arch>)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", dest="batch_size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--max-per-class", dest="max_per_class", type=int, help="subsample (smoke runs)")
    t.add_argument("--input-size", dest="input_size", type=int)
    t.add_argument("--min-specificity", dest="min_specificity", type=float)
    t.add_argument("--threads", type=int)
    t.add_argument("--workers", type=int)
    t.add_argument("--device")
    t.add_argument("--no-pretrained", action="store_true")
    t.add_argument("--no-track", dest="no_track", action="store_true",
                   help="do not log the run to MLflow (default: logged when mlflow is installed; "
                        "LEUKOVIEW_MLFLOW=0 turns it off too)")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_cmd_train)

    r = sub.add_parser("reevaluate", help="redo calibration, threshold, OOD and test metrics of a bundle with its "
                       "shipped weights and saved split")
    r.add_argument("bundles", nargs="+")
    r.add_argument("--min-specificity", dest="min_specificity", type=float,
                   help="specificity floor of the threshold rule (default: the bundle's)")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=_cmd_reevaluate)

    rh = sub.add_parser("refit-head", help="a cell-level bundle with its classifier refitted on each training "
                        "image's mean cell features (network frozen), written as a new bundle")
    rh.add_argument("bundle")
    rh.add_argument("--out", required=True, help="folder of the new bundle (the source is not changed)")
    rh.add_argument("--variant", help="bundle id variant (default: the source's + '-fieldhead')")
    rh.add_argument("--swaps", type=int, default=0, help="also fit on N copies of the train split with each image's "
                    "background replaced (cells kept), as the training augmentation does")
    rh.add_argument("--max-cells", type=int, help="score at most N cells of an image (largest first; default: the "
                    "source's number) and fit the head for that: fewer cells, faster batch scoring")
    rh.add_argument("--quiet", action="store_true")
    rh.set_defaults(func=_cmd_refit_head)

    au = sub.add_parser("audit", help="leakage audit of a dataset: duplicates, cross-split groups, balance")
    au.add_argument("dataset")
    au.add_argument("--positive", nargs="+")
    au.add_argument("--data-root", dest="data_root")
    au.add_argument("--split-seed", dest="split_seed", type=int, default=0)
    au.add_argument("--json", action="store_true")
    au.set_defaults(func=_cmd_audit)

    s = sub.add_parser("score", help="score every image under a folder into a CSV")
    s.add_argument("folder")
    s.add_argument("--bundle", required=True, help="model bundle folder, e.g. models/all4-efficientnet_lite0")
    s.add_argument("--out", required=True, help="CSV file to write")
    s.add_argument("--batch-size", dest="batch_size", type=int,
                   help="images decoded per step (default: predict.SCORE_CHUNK, 64)")
    s.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local (this process) or ray (Ray Data actors; resumable; RAY_ADDRESS joins a cluster)")
    s.add_argument("--actors", type=int, default=2, help="--engine ray: scoring actors (one CPU each)")
    s.set_defaults(func=_cmd_score)

    sub.add_parser("models", help="list and verify the bundles in the models folder").set_defaults(func=_cmd_models)

    c = sub.add_parser("compare", help="print the model-comparison table (the one the comparison page shows)")
    c.add_argument("--task", help="only bundles of this task (all4, wbc5, …)")
    c.add_argument("--markdown", action="store_true", help="as a Markdown table")
    c.add_argument("--readme", action="store_true", help="rewrite the README's results block from the bundles")
    c.add_argument("--brief", action="store_true",
                   help="the columns the README shows (with --section ood: one row a model)")
    c.add_argument("--section", choices=["models", "shift", "cam", "ood", "external", "cells"], default="models",
                   help="models (default), or the shift-test, Grad-CAM-mass, OOD-evaluation or external-set table, "
                        "or cells: the ALL issue's figures (threshold, background, CAM, C-NMC), one row each")
    c.add_argument("--models-dir", dest="models_dir", nargs="+", metavar="DIR",
                   help="bundles from these folders instead of the models folder (e.g. reports, for experiments; "
                        "several folders put shipped bundles and records in one table)")
    c.add_argument("--model", nargs="+", metavar="ID",
                   help="only these bundles (ids as the table shows them), in this order")
    c.add_argument("--records", action="store_true",
                   help="the folder holds bundle records kept without their weights (recipe screens, ablation "
                        "runs): read their cards and metrics without checking the files' sha256")
    c.set_defaults(func=_cmd_compare)

    sc = _audit_parser(sub, "shortcuts")
    sc.add_argument("bundles", nargs="+")
    sc.add_argument("--quiet", action="store_true")
    sc.set_defaults(func=_cmd_shortcuts)

    cs = _audit_parser(sub, "camstats")
    cs.add_argument("bundles", nargs="+")
    cs.add_argument("--max-images", dest="max_images", type=int, default=0, help="sample per class (0: all)")
    cs.add_argument("--quiet", action="store_true")
    cs.set_defaults(func=_cmd_camstats)

    sh = _audit_parser(sub, "shift")
    sh.add_argument("bundles", nargs="+")
    sh.add_argument("--max-images", dest="max_images", type=int, default=0, help="sample (0: whole test split)")
    sh.add_argument("--split", choices=["test", "val"], default="test",
                    help="val: re-render the validation split instead (stored as shift_val; for choosing a recipe "
                         "without the test split)")
    sh.add_argument("--only", nargs="+", metavar="SHIFT", help="only these shifts (names as printed; quote them)")
    sh.add_argument("--quiet", action="store_true")
    sh.set_defaults(func=_cmd_shift)

    oe = _audit_parser(sub, "oodeval")
    oe.add_argument("bundles", nargs="+")
    oe.add_argument("--quiet", action="store_true")
    oe.set_defaults(func=_cmd_oodeval)

    ex = _audit_parser(sub, "external")
    ex.add_argument("folder", help="FOLDER/<class>/<images>, e.g. ../shared/data/bccd_wbc")
    ex.add_argument("--bundle", dest="bundles", nargs="+", required=True)
    ex.add_argument("--map", nargs="+", metavar="FOLDER=CLASS",
                    help="folder name -> model class (default: case-insensitive name match; no match = unseen type)")
    ex.add_argument("--positive-folders", dest="positive_folders", nargs="+",
                    help="unmapped folders that hold clinically positive cells (not counted as normal)")
    ex.add_argument("--name", help="name of the set in metrics.json (default: the folder's name)")
    ex.add_argument("--quiet", action="store_true")
    ex.set_defaults(func=_cmd_external)

    se = _audit_parser(sub, "seen")
    se.add_argument("bundles", nargs="+")
    se.add_argument("--quiet", action="store_true")
    se.set_defaults(func=_cmd_seen)

    wt = _audit_parser(sub, "wrongtask")
    wt.add_argument("bundles", nargs="+")
    wt.add_argument("--per-dataset", dest="per_dataset", type=int, default=1000,
                    help="images sampled from each other dataset (default 1000)")
    wt.add_argument("--isolated-renders", dest="isolated_renders", type=int, default=0,
                    help="also fit on this many other-task and as many own training images rendered as isolated "
                         "cells on black (a wrong acquisition; default 0)")
    wt.add_argument("--generated", type=int, default=0,
                    help="also fit on this many generated non-smear pictures (photo crops, noise, gradients, "
                         "drawings: oodeval's designed-on kinds, drawn with another seed; default 0)")
    wt.add_argument("--quiet", action="store_true")
    wt.set_defaults(func=_cmd_wrongtask)

    pa = _audit_parser(sub, "palette")
    pa.add_argument("bundles", nargs="+")
    pa.add_argument("--quiet", action="store_true")
    pa.set_defaults(func=_cmd_palette)

    oc = _audit_parser(sub, "oodscores")
    oc.add_argument("bundles", nargs="+")
    oc.add_argument("--quiet", action="store_true")
    oc.set_defaults(func=_cmd_oodscores)

    pt = _audit_parser(sub, "patients")
    pt.add_argument("bundles", nargs="+")
    pt.set_defaults(func=_cmd_patients)
    me = _audit_parser(sub, "measure")
    me.add_argument("bundles", nargs="+")
    me.add_argument("--runs", type=int, default=30)
    me.add_argument("--threads", type=int, default=2)
    me.set_defaults(func=_cmd_measure)

    ad = sub.add_parser("adapt", help="adapt a bundle to a laboratory's look from its confirmed cells (a new "
                        "bundle; the base is never changed), with a held-out check on the site's own cells")
    ad.add_argument("--bundle", required=True)
    ad.add_argument("--site", required=True, help="the laboratory's name (letters, digits, - and _)")
    src = ad.add_mutually_exclusive_group(required=True)
    src.add_argument("--folder", help="a class-per-folder directory of the site's labelled cells")
    src.add_argument("--from-reviews", dest="from_reviews", action="store_true",
                     help="the reviewed cells of every signed-off slide in the review store")
    ad.add_argument("--store", help="the review store (default: LEUKOVIEW_REVIEW_DIR/decisions.sqlite)")
    ad.add_argument("--map", nargs="+", metavar="FOLDER=CLASS", help="folder name -> model class")
    ad.add_argument("--out", help="the new bundle's folder (default: models/<base id>-<site>)")
    ad.add_argument("--seed", type=int, default=0)
    ad.add_argument("--min-per-type", dest="min_per_type", type=int, default=5,
                    help="adapt cells a type needs (and as many again to check on)")
    ad.add_argument("--no-track", dest="no_track", action="store_true")
    ad.add_argument("--quiet", action="store_true")
    ad.set_defaults(func=_cmd_adapt)
    us = sub.add_parser("users", help="the local users file (sign-in): add NAME --role reviewer|supervisor, "
                        "remove NAME, list")
    us.add_argument("action", choices=["add", "remove", "list"])
    us.add_argument("name", nargs="?", default="")
    us.add_argument("--role", choices=["reviewer", "supervisor"], default="reviewer")
    us.add_argument("--password-stdin", dest="password_stdin", action="store_true",
                    help="read the password from the first line of standard input (scripts); default: ask")
    us.set_defaults(func=_cmd_users)
    at = sub.add_parser("audit-trail", help="verify the review store's tamper-evident trail: the first decision or "
                        "sign-off altered, deleted or inserted behind the app's back")
    at.add_argument("action", choices=["verify"])
    at.add_argument("--store", help="default: LEUKOVIEW_REVIEW_DIR/decisions.sqlite")
    at.set_defaults(func=_cmd_audit_trail)
    sv = sub.add_parser("serve", help="the scoring API (FastAPI on uvicorn): POST /v1/score, GET /v1/models, /docs")
    sv.add_argument("--host", default="127.0.0.1", help="default: loopback only")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--bundle", help="the default bundle id (default: the recommended leukocyte model)")
    sv.set_defaults(func=_cmd_serve)
    cm = sub.add_parser("card-migrate", help="rewrite older bundles' cards at the current card version "
                        "(card.schema.json); weights and predictions are not touched")
    cm.add_argument("bundles", nargs="+", type=Path)
    cm.set_defaults(func=_cmd_card_migrate)
    sd = sub.add_parser("sample-data", help="copy the sample images listed in sample_data/manifest.csv")
    sd.add_argument("--data-root", dest="data_root")
    sd.add_argument("--make-manifest", action="store_true",
                    help="(maintainers) re-pick the manifest from the test splits of the shipped bundles")
    sd.add_argument("--per-class", dest="per_class", type=int, default=3)
    sd.set_defaults(func=_cmd_sample_data)

    a = p.parse_args(argv)
    try:
        return a.func(a)
    except (ValueError, KeyError, FileNotFoundError) as e:  # user errors: a message, not a traceback
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
