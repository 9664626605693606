import io
import os
import zipfile

import pandas as pd
import pytest

from leukoview.app import batch
from tests.conftest import make_class_folders


def test_resolve_inside_refuses_escapes(tmp_path):
    (tmp_path / "root" / "a").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "root" / "link")
    root = tmp_path / "root"
    assert batch.resolve_inside(root, "a") == (root / "a").resolve()
    for bad, match in (("../outside", "'..'"), ("/etc", "absolute"), ("a/../../outside", "'..'"),
                       ("link", "outside the data root"), ("C:\\\\x", "absolute")):
        with pytest.raises(batch.BoundaryError, match=match):
            batch.resolve_inside(root, bad)


def test_image_folders_count_recursively_and_skip_symlinks(tmp_path):
    root = tmp_path / "root"
    make_class_folders(root / "set", {"x": 0, "y": 1}, 2)
    make_class_folders(tmp_path / "outside", {"z": 0}, 3)
    os.symlink(tmp_path / "outside", root / "link")
    listed = {rel: n for _, rel, n in batch.image_folders([root])}
    assert listed == {".": 4, "set": 4, "set/x": 2, "set/y": 2}


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_zip_traversal_members_are_refused(tmp_path):
    data = _zip({"ok/a.png": b"x", "../../evil.png": b"x", "/abs.png": b"x", "notes.txt": b"x"})
    files, refused = batch.extract_zip(data, tmp_path / "out")
    assert [p.name for p in files] == ["a.png"]
    assert not (tmp_path / "evil.png").exists() and not (tmp_path.parent / "evil.png").exists()
    assert any("outside the extraction folder" in r for r in refused) and any("notes.txt" in r for r in refused)


def test_zip_bomb_is_stopped(tmp_path):
    data = _zip({"bomb.png": b"\0" * (50 * 2**20)})
    with pytest.raises(batch.BoundaryError, match="zip bomb"):
        batch.extract_zip(data, tmp_path / "out")
    with pytest.raises(batch.BoundaryError, match="expands beyond"):
        batch.extract_zip(_zip({"a.png": b"1" * 1000, "b.png": b"2" * 1000}), tmp_path / "o2", max_bytes=1500)
    with pytest.raises(batch.BoundaryError, match="not a valid zip"):
        batch.extract_zip(b"PK nope", tmp_path / "o3")


def test_upload_batch_is_content_addressed(tmp_path):
    files = [("a.png", b"1"), ("dir/../b.png", b"2"), ("set.zip", _zip({"c.png": b"3"}))]
    bid, folder, refused = batch.upload_batch(files, tmp_path)
    assert bid == batch.upload_batch(list(reversed(files)), tmp_path)[0]
    assert sorted(p.name for p in folder.rglob("*.png")) == ["a.png", "b.png", "c.png"]
    assert folder.is_relative_to(tmp_path) and not refused


def scored():
    return pd.DataFrame({"file": ["UID_1_a.bmp", "UID_1_b.bmp", "UID_H2_c.bmp", "x.png", "bad.png"],
                         "suspicion": [0.9, 0.1, 0.2, 0.95, float("nan")], "predicted": ["all", "hem", "hem", "all",
                                                                                           ""],
                         "decision": ["positive", "negative", "negative", "positive", ""],
                         "ood_flag": [False, False, True, False, ""], "ood_score": [1, 1, 9, 1, float("nan")],
                         "error": ["", "", "", "", "broken"]})


def test_filter_and_sort():
    df = scored()
    assert batch.filter_scores(df, score_range=(0.15, 1))["file"].tolist() == ["UID_1_a.bmp", "UID_H2_c.bmp",
                                                                               "x.png"]
    assert batch.filter_scores(df, classes=["hem"], flagged_only=True)["file"].tolist() == ["UID_H2_c.bmp"]
    assert "bad.png" in batch.filter_scores(df, include_errors=True)["file"].tolist()
    ok = batch.filter_scores(df)
    assert batch.sort_scores(ok, "suspicion ↓")["file"].tolist()[0] == "x.png"


def test_per_patient_shares_of_a_scored_folder():
    from leukoview.models.differential import per_patient

    s = per_patient(scored(), ["all"]).set_index("patient")
    assert s.loc["1", "positive_percent"] == 50.0 and bool(s.loc["1", "at_or_above_line"])
    assert s.loc["H2", "classed"] == 0 and s.loc["H2", "positive"] == 0  # its only cell is flagged
    assert per_patient(scored().iloc[3:4], ["all"]).empty
