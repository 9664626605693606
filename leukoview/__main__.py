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
import sys
from pathlib import Path

from leukoview.cli.audits import (
    _cmd_audit,
    _cmd_camstats,
    _cmd_external,
    _cmd_measure,
    _cmd_oodeval,
    _cmd_oodscores,
    _cmd_palette,
    _cmd_patients,
    _cmd_seen,
    _cmd_shift,
    _cmd_shortcuts,
    _cmd_wrongtask,
)
from leukoview.cli.lab import _cmd_audit_trail, _cmd_sample_data, _cmd_score, _cmd_serve, _cmd_users
from leukoview.cli.models import (
    _cmd_adapt,
    _cmd_card_migrate,
    _cmd_compare,
    _cmd_models,
    _cmd_reevaluate,
    _cmd_refit_head,
    _cmd_train,
)


def _audit_parser(sub, name: str):
    """An audit's sub-command, its help from the audit registry (what it measures, where the result is stored)."""
    from leukoview.audits import REGISTRY

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
