"""Training-set membership: was an image (or a near copy of it) in a model's train or validation split?

A score on an image the model was trained or tuned on is not evidence of how it does on new images. Every bundle
can carry ``seen.json``: the sha256 and the 64-bit perceptual hash (:func:`leukoview.models.splits.perceptual_hash`)
of each train and validation image, and the near-duplicate distance its dataset's split grouped by. Training writes
it; ``python -m leukoview seen BUNDLE`` adds it to an older bundle from the data root. :class:`SeenIndex` answers
for one image: ``"train"``, ``"val"`` or ``""``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from leukoview.models import bundle
from leukoview.models.datasets import Dataset
from leukoview.models.splits import image_hashes, perceptual_hash

SEEN = bundle.SEEN
SHA_CHARS = 16  # 64 bits of the sha256: collisions are negligible at these sizes and the file stays small
NOTE = "seen in training: this score is not evidence of performance"


def seen_table(split, hashes, near_bits: int) -> dict:
    """The ``seen.json`` content from a bundle's split and the dataset's hashes (columns file, sha256, phash)."""
    m = split[split["split"].isin(["train", "val"])].merge(hashes, on="file", how="inner")
    return {"near_bits": int(near_bits), "split": m["split"].tolist(),
            "sha256": [s[:SHA_CHARS] for s in m["sha256"]], "phash": [f"{int(h):016x}" for h in m["phash"]],
            "what": f"the first {SHA_CHARS} hex digits of the sha256 and the 64-bit DCT perceptual hash (hex) of "
                    "every train and validation image; an image matches when its sha256 starts the same or its "
                    f"perceptual hash is within {near_bits} bits"}


def seen_for(ds: Dataset, split, *, progress: bool = False) -> dict:
    """``seen.json`` of a split of ``ds``. Near copies count at the distance the split grouped by; with patient
    ids for every image only exact copies do (single segmented cells look alike across patients)."""
    every_patient = bool((ds.manifest["patient"] != "").all())
    return seen_table(split, image_hashes(ds, progress=progress), 0 if every_patient else ds.near_bits)


class SeenIndex:
    """Look-ups against one bundle's ``seen.json``."""

    def __init__(self, table: dict):
        self.near_bits = int(table["near_bits"])
        self.split = np.asarray(table["split"], dtype=object)
        self.sha = {s[:SHA_CHARS]: i for i, s in enumerate(table["sha256"])}
        h = np.asarray([int(x, 16) for x in table["phash"]], dtype=np.uint64)
        self.bits = np.unpackbits(h.view(np.uint8).reshape(-1, 8), axis=1).astype(bool) if len(h) else \
            np.zeros((0, 64), bool)

    @classmethod
    def of(cls, bundle) -> SeenIndex | None:
        """The index of a bundle, or None when the bundle records no membership (older bundles)."""
        import json

        if not bundle.card.has_file(SEEN):
            return None
        return cls(json.loads((Path(bundle.path) / SEEN).read_text()))

    def lookup(self, data: bytes, image) -> str:
        """``"train"`` / ``"val"`` when the file's bytes or the image's perceptual hash match a seen image."""
        i = self.sha.get(hashlib.sha256(data).hexdigest()[:SHA_CHARS])
        if i is not None:
            return str(self.split[i])
        if not len(self.bits):
            return ""
        h = np.uint64(perceptual_hash(image))
        b = np.unpackbits(np.asarray([h], np.uint64).view(np.uint8)).astype(bool)
        dist = (self.bits != b).sum(1)
        k = int(dist.argmin())
        return str(self.split[k]) if dist[k] <= self.near_bits else ""
