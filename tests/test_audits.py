"""The audit registry: every audit has one shape (a module of leukoview/audits/ whose ``run(bundle_path, ...)`` runs
it and stores its result) and its result lands where the registry says, read back through ``audits.result``."""
from __future__ import annotations

import inspect
import shutil
from importlib import import_module

import pytest

from leukoview import audits
from leukoview.models.bundle import load_bundle
from tests.conftest import REPO


def test_every_registered_audit_runs_through_a_module_of_the_audits_folder():
    assert len(audits.REGISTRY) == 12
    for audit in audits.REGISTRY.values():
        assert (REPO / "leukoview" / "audits" / f"{audit.module}.py").is_file(), audit.name
        params = list(inspect.signature(import_module(f"leukoview.audits.{audit.module}").run).parameters)
        assert params[0] == "bundle_path", audit.name
        assert bool(audit.key) != bool(audit.file), audit.name  # one place: a metrics key or a file


# the heavy step of each audit, replaced by one that returns a known result (what the step computes is tested in
# each audit's own test file); the run must store exactly that, where the registry says
STEPS = {
    "shift": ("shift", "shift_eval", {"split": "test", "images": 3, "threshold": 0.5, "results": {"blur": {}}}),
    "shift-val": ("shift", "shift_eval", {"split": "val", "images": 2, "threshold": 0.5, "results": {"jpeg": {}}}),
    "oodeval": ("oodeval", "ood_eval", {"threshold": 1.5, "sets": {"noise": {"flagged": 3}}}),
    "oodscores": ("oodscores", "compare_ood", {"methods": ["knn"], "sets": {}}),
    "shortcuts": ("shortcuts", "audit", {"task": "folder", "level": "low", "groups": {}}),
    "camstats": ("camstats", "bundle_stats", {"images": 4, "method": "gradcam", "overall": {}}),
    "patients": ("patients", "differential.bundle_agreement", {"patients": 2, "mae_points": 3.0}),
    "seen": ("membership", "seen_for", {"near_bits": 6, "split": {"a.png": "train"}}),
}


@pytest.mark.parametrize("name", sorted(STEPS))
def test_an_audit_run_stores_its_result_where_the_registry_says(name, tiny_bundle, tmp_path, monkeypatch):
    folder = tmp_path / "b"
    shutil.copytree(tiny_bundle, folder)
    module_name, step, known = STEPS[name]
    module = import_module(f"leukoview.audits.{module_name}")
    target, attr = (module.differential, "bundle_agreement") if "." in step else (module, step)
    monkeypatch.setattr(target, attr, lambda *a, **k: dict(known, split=k.get("split", known.get("split")))
                        if name.startswith("shift") else dict(known))
    if name == "seen":
        monkeypatch.setattr(module, "load_dataset", lambda *a, **k: None)
    audit = audits.REGISTRY[name]
    returned = audit.run(folder, tmp_path, progress=False) if name != "patients" else audit.run(folder)
    stored = audits.result(load_bundle(folder), audit)  # verify: the card re-recorded the sha256 of what changed
    assert stored == returned and {k: stored[k] for k in known if k != "per_source"} == known
    others = [a for a in audits.REGISTRY.values() if a is not audit and audits.result(load_bundle(folder), a)
              and not audits.result(load_bundle(tiny_bundle), a)]
    assert not others, f"{name} also wrote {[a.name for a in others]}"


def test_a_partial_shift_run_keeps_the_other_shifts(tiny_bundle, tmp_path, monkeypatch):
    from leukoview.audits import shift

    folder = tmp_path / "b"
    shutil.copytree(tiny_bundle, folder)
    for shifts, results in ((None, {"blur": 1, "jpeg": 2}), (["jpeg"], {"jpeg": 3})):
        monkeypatch.setattr(shift, "shift_eval", lambda *a, r=results, **k: {"split": "test", "images": 3,
                                                                              "threshold": 0.5, "results": r})
        audits.SHIFT.run(folder, tmp_path, shifts=shifts, progress=False)
    assert audits.result(load_bundle(folder), audits.SHIFT)["results"] == {"blur": 1, "jpeg": 3}


def test_the_latency_audit_measures_and_stores_through_the_registry(tiny_bundle, tmp_path):
    folder = tmp_path / "b"
    shutil.copytree(tiny_bundle, folder)
    r = audits.LATENCY.run(folder, runs=3, threads=1)
    assert r["median_ms"] > 0 and audits.result(load_bundle(folder), audits.LATENCY) == r
