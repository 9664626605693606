"""Command handlers for models: training, re-evaluation, the field head, adaptation, listing, comparing, card
migration. Called by :mod:`leukoview.__main__` (which builds the parser)."""
from __future__ import annotations

import sys
from pathlib import Path

from leukoview.primitives import settings


def _test_line(m: dict) -> str:
    """A bundle's test metrics in one line, as the training commands print them."""
    return (f"test accuracy {m['accuracy']:.4f}, ROC-AUC {m['roc_auc']:.4f}, sensitivity "
            f"{m['at_threshold']['sensitivity']:.3f} / specificity {m['at_threshold']['specificity']:.3f}")


def _cmd_train(a) -> int:
    from leukoview.jobs.train import TrainConfig, fit

    overrides = {k: getattr(a, k) for k in ("dataset", "arch", "data_root", "out", "epochs", "batch_size", "lr",
                                             "seed", "max_per_class", "threads", "workers", "device", "input_size",
                                             "min_specificity", "features")}
    if a.positive:
        overrides["positive"] = a.positive
    if a.no_pretrained:
        overrides["pretrained"] = False
    cfg = TrainConfig.from_file(a.config, **overrides)
    from leukoview.jobs import classical_train
    from leukoview.models import classical

    folder = (classical_train.fit if classical.is_classical(cfg.arch) else fit)(cfg, progress=not a.quiet)
    from leukoview.app.tracking import log_bundle
    from leukoview.models.bundle import load_bundle

    if not a.no_track and (run_id := log_bundle(folder)):
        print(f"MLflow run {run_id} (experiment leukoview)")

    b = load_bundle(folder)
    m = b.metrics
    print(f"{b.id}: {_test_line(m)} at threshold {b.threshold:.4g}, ECE {m['ece']:.4f} -> {folder}")
    return 0


def _cmd_reevaluate(a) -> int:
    from leukoview.jobs.train import reevaluate
    from leukoview.models.bundle import load_bundle

    for folder in a.bundles:
        reevaluate(Path(folder), progress=not a.quiet, min_specificity=a.min_specificity)
        m = load_bundle(folder).metrics
        print(f"{folder}: {_test_line(m)}")
    return 0


def _cmd_refit_head(a) -> int:
    from leukoview.jobs.train import refit_field_head
    from leukoview.models.bundle import load_bundle

    try:
        folder = refit_field_head(Path(a.bundle), Path(a.out), variant=a.variant, swaps=a.swaps,
                                  max_cells=a.max_cells, progress=not a.quiet)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    b = load_bundle(folder)
    m = b.metrics
    print(f"{b.id}: field head C={b.card.head['C']:g}; {_test_line(m)}, ECE {m['ece']:.4f} -> {folder}")
    return 0


def _cmd_adapt(a) -> int:
    from tqdm import tqdm

    from leukoview.jobs import adapt, site_cells
    from leukoview.models.bundle import BundleError, load_bundle

    try:
        base = load_bundle(a.bundle)
        if a.folder:
            mapping = dict(m.split("=", 1) for m in a.map or [])
            cells = site_cells.site_from_folder(Path(a.folder), base.classes, mapping=mapping)
        else:
            from leukoview.app.review import ReviewStore

            cells = site_cells.site_from_reviews(ReviewStore(Path(a.store) if a.store else None), base.classes)
        out = Path(a.out) if a.out else base.path.parent / f"{base.id}-{a.site}"
        bar = tqdm(total=100, unit="%", disable=a.quiet)

        def progress(fraction, what, bar=bar):
            bar.set_description(what)
            bar.update(int(100 * fraction) - bar.n)

        folder = adapt.adapt(a.bundle, cells, site=a.site, out=out, seed=a.seed, progress=progress,
                             source="folder" if a.folder else "reviews", min_per_type=a.min_per_type)
        bar.close()
    except (site_cells.AdaptError, BundleError, ValueError) as e:
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
    from leukoview.app.tracking import log_bundle

    if not a.no_track and (run_id := log_bundle(folder)):
        print(f"  MLflow run {run_id}")
    return 0


def _cmd_models(a) -> int:
    from leukoview.models.bundle import bundle_problems, list_bundles

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
    from leukoview.app import compare

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
    from leukoview.app.compare import comparison_table, markdown_table
    from leukoview.models.bundle import list_bundles

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
        from leukoview.app.compare import readme_summary, replace_readme_block

        readme = settings.REPO_ROOT / "README.md"
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


def _cmd_card_migrate(a) -> int:
    from leukoview.models.bundle import BundleError, migrate_card

    for folder in a.bundles:
        try:
            print(f"{folder}: {'migrated' if migrate_card(folder) else 'already current'}")
        except BundleError as e:
            print(f"{folder}: {e}", file=sys.stderr)
            return 2
    return 0
