import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from leukoview.models import datasets as D
from leukoview.models import splits as S
from tests.conftest import cell_image, make_class_folders


def test_load_all4_maps_folders_to_classes(synthetic_root):
    ds = D.load_all4(synthetic_root)
    assert ds.classes == ("Benign", "Early Pre-B", "Pre-B", "Pro-B")
    assert set(ds.positive) == {"Early Pre-B", "Pre-B", "Pro-B"}
    assert len(ds.manifest) == 24
    assert ds.manifest["file"].str.startswith("all4/").all()
    assert not ds.has_patients


def test_load_wbc5_keeps_published_split(synthetic_root):
    ds = D.load_wbc5(synthetic_root)
    assert ds.positive == ("myeloblast",)
    assert len(ds.manifest) == 5 * (4 + 2 + 2)
    assert set(ds.manifest["source_split"]) == {"train", "val", "test"}


def test_load_cnmc_parses_patients_from_kaggle_layout(synthetic_root):
    ds = D.load_dataset("cnmc", synthetic_root)
    assert ds.classes == ("hem", "all") and ds.positive == ("all",)
    assert ds.has_patients
    assert set(ds.manifest["patient"]) == {"1", "2", "3", "4", "H1", "H2", "H3", "H4"}
    assert set(ds.manifest["source_split"]) == {"fold_0"}


@pytest.mark.parametrize("name,patient", [("UID_11_10_1_all.bmp", "11"), ("UID_H22_3_7_hem.png", "H22"),
                                          ("uid_h5_1_1_hem.bmp", "H5"), ("cell.png", "")])
def test_cnmc_patient_parsing(name, patient):
    assert D.cnmc_patient(name) == patient


def test_cnmc_plain_all_hem_folder(tmp_path):
    make_class_folders(tmp_path / "cnmc", {"all": 2, "hem": 0}, 3)
    ds = D.load_cnmc(tmp_path)
    assert len(ds.manifest) == 6


def test_folder_dataset_requires_known_positive_classes(tmp_path):
    make_class_folders(tmp_path / "f", {"a": 0, "b": 2}, 3)
    ds = D.load_dataset("folder:f", tmp_path, positive=["b"])
    assert ds.classes == ("a", "b") and ds.manifest["file"].str.startswith("f/").all()
    with pytest.raises(D.DatasetError, match="positive classes must be chosen among"):
        D.load_dataset("folder:f", tmp_path, positive=["c"])


def test_unknown_dataset_lists_known_ones(tmp_path):
    with pytest.raises(D.DatasetError, match="known: \\['all4', 'cnmc', 'deepapl', 'diff3', 'wbc5', 'wbc9'\\]"):
        D.load_dataset("nope", tmp_path)


def test_missing_dataset_says_where_it_looked(tmp_path):
    with pytest.raises(D.DatasetError, match="LEUKOVIEW_DATA_ROOT"):
        D.load_all4(tmp_path)


def test_perceptual_hash_is_robust_to_reencoding(tmp_path):
    img = cell_image(1, np.random.default_rng(0), size=128)
    img.save(tmp_path / "a.png")
    img.resize((100, 100)).save(tmp_path / "b.jpg", quality=70)
    other = cell_image(3, np.random.default_rng(5), size=128)
    ha, hb, ho = (S.perceptual_hash(Image.open(tmp_path / f)) for f in ("a.png", "b.jpg")), None, None
    ha, hb = list(ha)
    ho = S.perceptual_hash(other)
    assert bin(ha ^ hb).count("1") <= 6
    assert bin(ha ^ ho).count("1") > 10


def test_hamming_pairs_matches_brute_force():
    rng = np.random.default_rng(0)
    hashes = [int(x) for x in rng.integers(0, 2**63, 50, dtype=np.int64)]
    hashes += [hashes[0] ^ 0b101, hashes[1] ^ (1 << 63)]  # two planted near copies
    got = set(S.hamming_pairs(np.array(hashes, dtype=object), 3))
    want = {(i, j) for i in range(len(hashes)) for j in range(i + 1, len(hashes))
            if bin(hashes[i] ^ hashes[j]).count("1") <= 3}
    assert got == want and (0, 50) in got and (1, 51) in got


def _with_duplicates(root):
    """all4-style root where some files are exact and near copies of others."""
    make_class_folders(root / "all4", {"Benign": 0, "Early": 1, "Pre": 2, "Pro": 3}, 20, seed=2, suffix=".jpg")
    pro = root / "all4" / "Pro"
    shutil.copyfile(pro / "Pro_000.jpg", pro / "Pro_copy.jpg")  # exact duplicate
    Image.open(pro / "Pro_001.jpg").resize((60, 60)).save(pro / "Pro_near.jpg", quality=80)  # near duplicate
    return root


def test_split_keeps_exact_and_near_duplicates_together(tmp_path):
    ds = D.load_all4(_with_duplicates(tmp_path))
    for seed in range(5):
        split = S.make_split(ds, seed=seed, progress=False).set_index("file")
        assert split.at["all4/Pro/Pro_000.jpg", "split"] == split.at["all4/Pro/Pro_copy.jpg", "split"]
        assert split.at["all4/Pro/Pro_001.jpg", "split"] == split.at["all4/Pro/Pro_near.jpg", "split"]
        assert split.at["all4/Pro/Pro_000.jpg", "group"] == split.at["all4/Pro/Pro_copy.jpg", "group"]
    audit = S.leakage_audit(ds, S.make_split(ds, progress=False))
    assert audit["exact_duplicate_groups"] == 1 and audit["groups_crossing_our_split"] == 0


def test_split_by_patient_never_shares_a_patient(synthetic_root):
    ds = D.load_dataset("cnmc", synthetic_root)
    split = S.make_split(ds, progress=False)
    assert (split.groupby("patient")["split"].nunique() == 1).all()
    assert S.leakage_audit(ds, split)["patients_in_more_than_one_split"] == 0


def test_grouped_split_fractions_and_determinism():
    labels = pd.Series(["a"] * 700 + ["b"] * 300)
    groups = pd.Series([f"g{i // 2}" for i in range(1000)])  # pairs
    s1 = S.grouped_split(labels, groups, seed=3)
    s2 = S.grouped_split(labels, groups, seed=3)
    assert (s1 == s2).all()
    for cls, n in (("a", 700), ("b", 300)):
        counts = pd.Series(s1[labels == cls]).value_counts()
        assert abs(counts["train"] - 0.7 * n) <= 2 and abs(counts["test"] - 0.15 * n) <= 2
    assert (pd.DataFrame({"g": groups, "s": s1}).groupby("g")["s"].nunique() == 1).all()
    with pytest.raises(ValueError, match="summing to 1"):
        S.grouped_split(labels, groups, fractions=(0.5, 0.2, 0.2))


def test_split_hash_is_order_independent():
    df = pd.DataFrame({"file": ["a", "b", "c"], "split": ["train", "val", "test"]})
    assert S.split_hash(df) == S.split_hash(df.iloc[::-1])
    assert S.split_hash(df) != S.split_hash(df.assign(split=["val", "train", "test"]))


def test_sample_data_is_copied_from_the_root_and_reports_missing(tmp_path):
    from leukoview.app import samples

    make_class_folders(tmp_path / "root" / "set", {"a": 0}, 2)
    folder = tmp_path / "sample_data"
    folder.mkdir()
    pd.DataFrame([{"dataset": "x", "file": "set/a/a_000.png", "label": "a", "licence": "CC"},
                  {"dataset": "x", "file": "set/a/missing.png", "label": "a", "licence": "CC"},
                  {"dataset": "x", "file": "../escape.png", "label": "a", "licence": "CC"}]).to_csv(
        folder / samples.MANIFEST, index=False)
    copied, missing = samples.fill_sample_data(tmp_path / "root", folder)
    assert copied == 1 and missing == ["set/a/missing.png", "../escape.png"]
    avail = samples.available_samples(folder)
    assert avail["file"].tolist() == ["set/a/a_000.png"] and avail["path"][0].is_file()


def _mixed_dataset(tmp_path):
    """Cells of two patients (3 each) and, without a patient, an image, its near copy and an unrelated image."""
    rng = np.random.default_rng(3)
    rows = []
    for p in ("P1", "P2"):
        for k in range(3):
            f = tmp_path / p / f"c{k}.png"
            f.parent.mkdir(parents=True, exist_ok=True)
            cell_image(k, rng).save(f)
            rows.append({"file": f"{p}/c{k}.png", "label": "blast", "patient": p, "source_split": "", "source": "JHH"})
    a = cell_image(1, rng, size=96)
    (tmp_path / "lab").mkdir()
    a.save(tmp_path / "lab" / "a.png")
    a.resize((90, 90)).resize((96, 96)).save(tmp_path / "lab" / "a_near.png")
    cell_image(3, rng, size=96).save(tmp_path / "lab" / "b.png")
    rows += [{"file": f"lab/{n}", "label": "normal", "patient": "", "source_split": "", "source": "LMU"}
             for n in ("a.png", "a_near.png", "b.png")]
    return D.Dataset("mixed", ("blast", "normal"), ("blast",), tmp_path, D._manifest(rows), near_bits=6)


def test_a_dataset_mixing_patients_and_unknown_patients_gets_both_groupings(tmp_path):
    ds = _mixed_dataset(tmp_path)
    g = S.duplicate_groups(ds, S.image_hashes(ds, progress=False)).set_index("file")["group"]
    assert g["P1/c0.png"] == g["P1/c1.png"] == g["P1/c2.png"] != g["P2/c0.png"]  # one group a patient
    assert g["lab/a.png"] == g["lab/a_near.png"] != g["lab/b.png"]  # near copies, among the unknown
    assert g["lab/b.png"] not in set(g[[f"P{i}/c{k}.png" for i in (1, 2) for k in range(3)]])  # no "" patient
    assert "patient where known (6 images)" in S.split_grouping(ds)


def test_big_patient_groups_beside_single_images_are_split_by_their_own_stratum():
    """40 patients of 17 cells and 1000 single images of one class: without strata the greedy largest-first rule
    put every patient in train; with the patient stratum each split gets its share of patients."""
    labels = pd.Series(["blast"] * (40 * 17 + 1000))
    groups = pd.Series([f"p{i // 17}" for i in range(40 * 17)] + [f"s{i}" for i in range(1000)])
    kind = pd.Series(["patient"] * (40 * 17) + ["image"] * 1000)
    plain = pd.Series(S.grouped_split(labels, groups))
    assert set(plain[:40 * 17]) == {"train"}  # the defect the strata fix
    split = pd.Series(S.grouped_split(labels, groups, strata=kind))
    per = split[:40 * 17].groupby(groups[:40 * 17]).first().value_counts()
    assert per["train"] == 28 and per["val"] == 6 and per["test"] == 6


def test_source_balanced_sampling_weighs_each_source_of_a_class_equally():
    from leukoview.jobs.rundata import source_balanced_weights

    labels = pd.Series(["blast"] * 90 + ["blast"] * 10 + ["normal"] * 50)
    sources = pd.Series(["LMU"] * 90 + ["JHH"] * 10 + ["PBC"] * 50)
    w = source_balanced_weights(labels, sources, by_class=True).numpy()
    assert w[:90].sum() == pytest.approx(w[90:100].sum()) and w[:100].sum() == pytest.approx(w[100:].sum())
    w = source_balanced_weights(labels, sources, by_class=False).numpy()  # classes keep their share of the split
    assert w[:90].sum() == pytest.approx(w[90:100].sum()) and w[:100].sum() == pytest.approx(2 * w[100:].sum())


@pytest.mark.skipif(not (__import__("tests.conftest", fromlist=["x"]).real_data_root() or Path("/nonexistent"))
                    .joinpath("deepapl").is_dir(), reason="deepapl not in the real data root")
def test_diff3_splits_deepapl_by_patient_and_maps_its_types():
    from tests.conftest import real_data_root

    ds = D.load_dataset("diff3", real_data_root())
    m = ds.manifest
    assert set(m["source"]) == {"PBC", "LMU", "JHH"} and set(m["label"]) == set(ds.classes)
    jhh = m[m["source"] == "JHH"]
    assert len(jhh) == 1221 and (jhh["patient"] != "").all() and (m.loc[m["source"] != "JHH", "patient"] == "").all()
    assert (jhh["label"] == "blast").sum() == 600 and (m.loc[m["source"] == "LMU", "label"] == "blast").sum() == 1000
    assert jhh.loc[jhh["file"].str.contains("Band neutrophils"), "label"].eq("neutrophil").all()
    split = S.make_split(ds, progress=False)
    per_patient = split[split["patient"] != ""].groupby("patient")["split"].nunique()
    assert (per_patient == 1).all() and S.leakage_audit(ds, split)["patients_in_more_than_one_split"] == 0
    # the patients are spread over the three splits (not all placed in train before the single images)
    jhh = split[split["source"] == "JHH"].groupby("split")["patient"].nunique()
    assert set(jhh.index) == {"train", "val", "test"} and jhh["test"] >= 8 and jhh["val"] >= 8


def test_training_refuses_the_evaluation_only_sets(tmp_path):
    """bccd_wbc and cnmc_sample are for external evaluation: a run whose data lie there stops before any training,
    whether named as a folder or found by a registered loader (cnmc falls back to cnmc_sample for evaluation)."""
    from leukoview.jobs.rundata import prepare_run
    from leukoview.jobs.trainconfig import TrainConfig

    make_class_folders(tmp_path / "bccd_wbc", {"neutrophil": 0, "blast": 3}, 3)
    make_class_folders(tmp_path / "cnmc_sample", {"all": 2, "hem": 0}, 3)
    make_class_folders(tmp_path / "mine", {"neutrophil": 0, "blast": 3}, 3)
    assert D.evaluation_only_files(D.load_dataset("folder:mine", tmp_path, positive=["blast"]), tmp_path) == []
    assert len(D.evaluation_only_files(D.load_dataset("cnmc", tmp_path), tmp_path)) == 6
    for name, positive in (("folder:bccd_wbc", ["blast"]), ("cnmc", ["all"]),
                           (f"folder:{tmp_path / 'bccd_wbc'}", ["blast"])):
        cfg = TrainConfig(dataset=name, positive=positive, arch="cnn16", data_root=str(tmp_path),
                          out=str(tmp_path / "out"), pretrained=False, epochs=1, workers=0, input_size=32)
        with pytest.raises(D.DatasetError, match="evaluation-only"):
            prepare_run(cfg, progress=False)
    assert not (tmp_path / "out").exists()
