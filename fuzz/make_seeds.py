"""Write the committed seed corpus (synthetic images, zips, a tiny bundle's card and weights; no real data).

    python fuzz/make_seeds.py
"""
from __future__ import annotations

import io
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
HERE = Path(__file__).resolve().parent / "corpus"


def _img(fmt: str, size=48, mode="RGB") -> bytes:
    rng = np.random.default_rng(0)
    a = np.full((size, size, 3), (235, 215, 225), np.uint8)
    a[12:36, 12:36] = (110, 60, 170)
    a = np.clip(a + rng.normal(0, 3, a.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).convert(mode).save(buf, format=fmt)
    return buf.getvalue()


def decisions_seeds(folder: Path) -> None:
    """Decisions CSVs as the batch page exports them (the files of fuzz.targets.decisions' stand-in batch)."""
    folder.mkdir(parents=True, exist_ok=True)
    head = "folder,model,threshold,file,suspicion,predicted,review_action,review_label,review_comment,reviewed_by," \
           "reviewed_at\n"
    rows = ['/data/slide,m1,0.5,a.png,0.9,blast,confirm,blast,,Dr X,2026-12-01T10:00:00\n',
            '/data/slide,m1,0.5,b.png,0.2,normal,override,unidentified,"looks, odd",Dr X,2026-12-01T10:01:00\n',
            '/data/slide,m1,0.5,c.png,0.1,normal,second_review,,,Dr Y,2026-12-01T10:02:00\n',
            '/data/slide,m1,0.5,d.png,0.1,normal,,,,,\n']
    (folder / "export.csv").write_text(head + "".join(rows))
    (folder / "minimal.csv").write_text("file,review_action,review_label\na.png,override,normal\n")


def main() -> None:
    if HERE.exists():
        shutil.rmtree(HERE)
    (HERE / "image").mkdir(parents=True)
    for fmt, mode in (("PNG", "RGB"), ("JPEG", "RGB"), ("BMP", "RGB"), ("GIF", "P"), ("TIFF", "RGB"),
                      ("WEBP", "RGB"), ("PNG", "RGBA"), ("PNG", "L")):
        (HERE / "image" / f"seed_{fmt.lower()}_{mode}.{fmt.lower()}").write_bytes(_img(fmt, mode=mode))
    (HERE / "zip").mkdir()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.png", _img("PNG"))
        z.writestr("sub/b.jpg", _img("JPEG"))
        z.writestr("../escape.png", _img("PNG"))
        z.writestr("notes.txt", "text")
    (HERE / "zip" / "seed.zip").write_bytes(buf.getvalue())
    decisions_seeds(HERE / "decisions")
    from leukoview.jobs.train import TrainConfig, fit
    from tests.conftest import make_class_folders

    tmp = HERE.parent / ".seed-tmp"
    make_class_folders(tmp / "cells", {"normal": 0, "blast": 3}, 6, seed=1)
    out = fit(TrainConfig(dataset="folder:cells", positive=["blast"], arch="cnn16", data_root=str(tmp),
                          out=str(HERE / "bundle"), pretrained=False, epochs=1, batch_size=4, workers=0,
                          input_size=32, n_boot=5, ood_components=2), progress=False)
    shutil.rmtree(tmp)
    (HERE / "card").mkdir()
    shutil.copy(out / "card.json", HERE / "card" / "card.json")
    (HERE / "weights").mkdir()
    shutil.copy(out / "model.safetensors", HERE / "weights" / "model.safetensors")
    print(f"seed corpus written to {HERE}")


if __name__ == "__main__":
    main()
