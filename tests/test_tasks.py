"""The task registry: one entry per registered dataset, and what the pages and the OOD evaluation read from it."""
from __future__ import annotations

from leukoview.models import datasets
from leukoview.primitives import tasks


def test_every_registered_task_has_a_loader_and_back():
    assert set(datasets.LOADERS) == set(tasks.TASKS)


def test_loaded_datasets_take_classes_and_licence_from_the_registry(synthetic_root):
    for name in ("all4", "wbc5", "cnmc"):
        ds = datasets.load_dataset(name, synthetic_root)
        t = tasks.TASKS[name]
        assert ds.classes == t.classes and ds.positive == t.positive and ds.licence == t.licence


def test_other_tasks_leave_out_those_sharing_images(monkeypatch):
    assert tasks.TASKS["all4"].others() == ["wbc5", "wbc9", "deepapl", "cnmc"]  # not diff3: wbc9 + deepapl
    assert tasks.TASKS["wbc9"].others() == ["all4", "deepapl", "cnmc"]  # wbc9 holds every wbc5 image
    assert tasks.TASKS["diff3"].others() == ["all4", "cnmc"]
    t = tasks.Task("x", "X", "x+", ("a", "b"), ("b",), "", "", shares_images_with=("wbc5",))
    monkeypatch.setitem(tasks.TASKS, "x", t)
    assert t.others() == ["all4", "wbc9", "deepapl", "cnmc"]


def test_titles_fall_back_for_folder_datasets():
    assert tasks.task_title("wbc5") == "Myeloblast among leukocytes (5 types, 2 scanners)"
    assert tasks.task_title("folder:my_cells") == "folder:my_cells"
    assert tasks.positive_name("folder:my_cells", ["blast", "pro"]) == "blast / pro"


def test_recommended_for_follows_the_supersession_chain():
    assert tasks.recommended_for("wbc5") == tasks.recommended_for("wbc9") == tasks.TASKS["diff3"].recommended
    assert tasks.recommended_for("all4") == tasks.TASKS["all4"].recommended
    assert tasks.recommended_for("folder:x") == ""
