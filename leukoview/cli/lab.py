"""Command handlers a laboratory runs: scoring (local or Ray), the scoring API, users, the audit trail, sample data.
Called by :mod:`leukoview.__main__` (which builds the parser)."""
from __future__ import annotations

import sys
from pathlib import Path


def _cmd_score(a) -> int:
    from tqdm import tqdm

    from leukoview.jobs.predict import SCORE_CHUNK, Predictor, score_folder

    folder = Path(a.folder)
    if not folder.is_dir():
        print(f"error: {folder} is not a folder", file=sys.stderr)
        return 2
    predictor = Predictor(a.bundle)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if a.engine == "ray":
        try:
            from leukoview.app.scale import score_ray
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
        from leukoview.app.batch import differential

        table, summary = differential(df, predictor.classes, predictor.bundle.positive)
        path = out.with_name(out.stem + "_differential.csv")
        table.assign(percent=table["percent"].round(2)).to_csv(path, index=False)
        typed = table.iloc[:-1]  # the last row is the unidentified cells
        print(f"differential ({summary['classed']} classed cells, {summary['unidentified']} unidentified and left "
              "out of the %): " + ", ".join(f"{r.type} {r.percent:.1f}%" for r in typed.itertuples() if r.count))
        print(f"{' + '.join(summary['positive_types'])}: {summary['positive_percent']:.1f}% of classed cells "
              f"({'at or above' if summary['at_or_above_reference'] else 'below'} the "
              f"{summary['reference_percent']:.0f}% line) -> {path}")
    from leukoview.models.differential import REFERENCE, per_patient

    patients = per_patient(df, predictor.bundle.positive)
    if len(patients):  # images carry patients (a folder per patient, or ids in the names)
        path = out.with_name(out.stem + "_patients.csv")
        patients.assign(positive_percent=patients["positive_percent"].round(2)).to_csv(path, index=False)
        print(f"{len(patients)} patients; {int(patients['at_or_above_line'].sum())} at or above the "
              f"{100 * REFERENCE:.0f}% line ({' + '.join(predictor.bundle.positive)} among classed cells) -> {path}")
    return 0


def _cmd_serve(a) -> int:
    import os

    try:
        from leukoview.app.api import TOKEN_ENV, serve
    except ImportError as e:
        print(f"error: serving needs the API extra ({e.name} is missing): pip install -r requirements.txt",
              file=sys.stderr)
        return 2
    if a.host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get(TOKEN_ENV):
        print(f"warning: listening on {a.host} without {TOKEN_ENV}: anyone who reaches this port can score images",
              file=sys.stderr)
    serve(host=a.host, port=a.port, bundle=a.bundle)
    return 0


def _cmd_users(a) -> int:
    import getpass

    from leukoview.app import users

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
    from leukoview.app.review import ReviewStore, ReviewStoreError

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


def _cmd_sample_data(a) -> int:
    from leukoview.app.samples import fill_sample_data, write_manifest

    if a.make_manifest:
        path = write_manifest(per_class=a.per_class)
        print(f"manifest written: {path}")
    copied, missing = fill_sample_data(Path(a.data_root) if a.data_root else None)
    print(f"{copied} sample images copied into sample_data/; {len(missing)} not found in the data root")
    for m in missing:
        print(f"  missing: {m}")
    return 0 if not missing else 1
