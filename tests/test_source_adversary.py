"""The scanner adversary of training (TrainConfig.source_adversary): gradient reversal, which images it sees, its
log, and its refusals. Synthetic data only."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from leukoview.jobs import adversary, rundata, train
from tests.conftest import cell_image

WBC5 = {"basophil": 0, "erythroblast": 1, "monocyte": 2, "myeloblast": 3, "seg_neutrophil": 2}
PBC_EXTRA = {"eosinophil": 1, "ig": 2, "lymphocyte": 0, "neutrophil": 2, "platelet": 0}


@pytest.fixture
def wbc9_root(tmp_path):
    """A wbc9 layout: wbc5 (myeloblast and seg_neutrophil with LMU file-name prefixes) and pbc_extra."""
    rng = np.random.default_rng(11)
    root = tmp_path / "data"
    prefix = {"myeloblast": "MYO_", "seg_neutrophil": "NGS_"}
    for split, n in (("train", 6), ("val", 3), ("test", 3)):
        for name, kind in WBC5.items():
            d = root / "wbc5" / split / name
            d.mkdir(parents=True)
            for i in range(n):
                cell_image(kind, rng).save(d / f"{prefix.get(name, name.upper()[:3] + '_')}{split}{i}.jpg")
    for name, kind in PBC_EXTRA.items():
        d = root / "pbc_extra" / name
        d.mkdir(parents=True)
        for i in range(14):
            cell_image(kind, rng).save(d / f"{name.upper()[:3]}_{i}.jpg")
    return root


def test_reversed_gradient_is_the_negated_scaled_gradient_and_the_forward_is_unchanged():
    x = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(5, 3)
    y = adversary.reverse_gradient(x, 0.4)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -0.4 * w)


def test_adversary_strength_rises_from_zero_to_almost_one_over_training():
    steps = [adversary.adversary_weight(p) for p in np.linspace(0, 1, 11)]
    assert steps[0] == 0 and all(b > a for a, b in zip(steps, steps[1:], strict=False)) and 0.99 < steps[-1] < 1


def _cfg(root, out, **extra):
    return train.TrainConfig(dataset="wbc9", arch="cnn32", data_root=str(root), out=str(out), pretrained=False,
                             epochs=2, batch_size=8, workers=0, input_size=48, n_boot=20, ood_components=4,
                             min_specificity=0.5, **extra)


def test_the_adversary_sees_only_the_classes_two_scanners_imaged(wbc9_root, tmp_path):
    run = rundata.prepare_run(_cfg(wbc9_root, tmp_path / "m", source_adversary=0.5), progress=False)
    sources, shared = run.adversary_sources()
    assert sources == ["LMU", "PBC"] and shared == ["neutrophil"]
    sub = run.split[run.split["split"] == "train"]
    domains = pd.Series(run.domains("train"), index=sub.index)
    assert (domains[sub["label"] != "neutrophil"] == -1).all()
    neutrophils = sub[sub["label"] == "neutrophil"]
    assert (domains[neutrophils.index] == neutrophils["source"].map({"LMU": 0, "PBC": 1})).all()
    assert set(domains[neutrophils.index]) == {0, 1}
    x, y, d = run.loader("train", train=True).dataset[int(np.flatnonzero(sub["label"] == "neutrophil")[0])]
    assert d in (0, 1) and x.shape[-1] == 48
    assert rundata.prepare_run(_cfg(wbc9_root, tmp_path / "n"), progress=False).domains("train") is None


def test_training_with_the_adversary_logs_it_changes_the_network_and_ships_it_plain(wbc9_root, tmp_path,
                                                                                   monkeypatch):
    out = train.fit(_cfg(wbc9_root, tmp_path / "adv", source_adversary=0.5), progress=False)
    log = pd.read_csv(out / "train_log.csv")
    assert {"source_adversary_loss", "source_adversary_balanced_accuracy"} <= set(log.columns)
    assert log["source_adversary_loss"].gt(0).all() and log["source_adversary_balanced_accuracy"].between(0, 1).all()
    from leukoview.models.bundle import load_bundle

    card = load_bundle(out).card
    assert card.config["source_adversary"] == 0.5
    # the head is training-only: the bundle's network is the plain architecture (it loads and predicts)
    from leukoview.jobs.predict import Predictor

    p = Predictor(out, backend="torch")
    from leukoview.models.archs import get_arch

    assert set(p.model.state_dict()) == set(get_arch("cnn32").build(len(p.classes), pretrained=False)[0].state_dict())
    # its reversed gradient reaches the network: the same run (same head, same random draws) with the reversal's
    # strength held at 0 trains other weights
    monkeypatch.setattr(train, "adversary_weight", lambda progress: 0.0)
    held = train.fit(_cfg(wbc9_root, tmp_path / "held", source_adversary=0.5), progress=False)
    assert (held / "model.safetensors").read_bytes() != (out / "model.safetensors").read_bytes()


def test_the_adversary_is_refused_where_it_has_nothing_to_do(tmp_path, wbc9_root):
    from tests.conftest import make_class_folders

    make_class_folders(tmp_path / "flat" / "cells", {"normal": 0, "blast": 3}, 10, seed=2)
    cfg = train.TrainConfig(dataset="folder:cells", positive=["blast"], arch="cnn32", data_root=str(tmp_path / "flat"),
                            out=str(tmp_path / "x"), pretrained=False, epochs=1, batch_size=8, workers=0,
                            input_size=48, source_adversary=0.5)
    with pytest.raises(ValueError, match="imaged by two or more sources"):
        train.fit(cfg, progress=False)
    with pytest.raises(ValueError, match="0 or more"):
        train.TrainConfig.from_file(None, source_adversary=-1.0)
    with pytest.raises(ValueError, match="not with a cell-level model"):
        train.TrainConfig.from_file(None, source_adversary=0.5, locate_cell=True, locate_method="cells")
