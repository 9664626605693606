"""Images -> class probabilities, suspicion score, decision and out-of-distribution flag.

:class:`Predictor` wraps a verified bundle; :func:`score_folder` / :func:`score_files` serve the CLI and the
batch page alike (progress callback, one row per file, unreadable files reported in an ``error`` column).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from leukoview.models import onnx_backend
from leukoview.models.archs import get_arch
from leukoview.models.bundle import Bundle, load_bundle
from leukoview.models.classical import ClassicalModel
from leukoview.models.seen import SeenIndex
from leukoview.models.transforms import cell_arrays, cell_level, locate, normalise_batch, resize_array
from leukoview.primitives.calibration import softmax
from leukoview.primitives.images import ImageError, find_images, load_image
from leukoview.primitives.ood import linear_scores, ood_scores
from leukoview.primitives.segment import NOT_A_SMEAR, CellCrop, crop_cell, smear_gate
from leukoview.primitives.vocab import CANNOT_ASSESS

ProgressFn = Callable[[int, int], None]


@dataclass
class Prediction:
    probabilities: dict[str, float]
    predicted: str
    suspicion: float
    decision: bool  # suspicion >= the bundle's threshold
    ood_score: float
    ood_flag: bool
    wrong_kind: str = ""  # why this model does not read this kind of image ('' when it does); ood_flag is then set


# A field model (cell-level: it reads every cell of a smear field) gives no verdict on a single-cell crop. The rule:
# the largest cell's inscribed radius over the image's shorter side. Measured with find_cells on 150 images each
# (reports/probe-input-kind.md): all4 fields 0.057 median, 0.100 at the 99th percentile; single-cell crops above
# it (wbc5 0.138 median, DeepAPL 0.164, BCCD 0.227 with 0.118 at the 1st percentile, C-NMC 0.196).
FIELD_MAX_CELL = 0.115


class Predictor:
    """A bundle's network ready for inference, with its preprocessing, temperature, threshold and OOD state."""

    def __init__(self, bundle: Bundle | str | Path, *, backend: str = "auto"):
        """``backend``: "torch" (eager), "onnx" (ONNX Runtime) or "auto" (ONNX Runtime when installed)."""
        if backend not in ("auto", "torch", "onnx"):
            raise ValueError(f"backend must be auto, torch or onnx, got {backend!r}")
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        card = self.bundle.card
        self.classes = self.bundle.classes
        self.positive_index = [self.classes.index(c) for c in self.bundle.positive]
        self.threshold = self.bundle.threshold
        self.temperature = card.temperature
        self.spec = card.input
        self.ood = self.bundle.ood_state()
        self.ood_threshold = card.ood_threshold
        self.wrong_task = self.bundle.wrong_task()  # (arrays, threshold) or None: leukoview.audits.wrongtask
        self.palette = self.bundle.palette()  # (arrays, threshold) or None: leukoview.audits.palette
        self.seen = SeenIndex.of(self.bundle)  # None: the bundle records no training-set membership
        self._features: list[torch.Tensor] = []
        self.onnx = None
        if not self.bundle.is_network:
            self.model = None
            self.classical = ClassicalModel(self.bundle.path, card)
            self.backend = "classical"
            return
        self.classical = None
        self.model = self.bundle.build_model()
        classifier_path = card.classifier or get_arch(card.architecture).classifier
        if backend == "onnx" or (backend == "auto" and onnx_backend.available()):
            self.onnx = onnx_backend.OnnxRunner(self.model, classifier_path, int(self.spec["size"]))
        else:  # eager path: capture the classifier's input (under ONNX the graph returns it, and a hook here
            # would keep collecting features from every Grad-CAM forward on the torch model)
            self.model.get_submodule(classifier_path).register_forward_pre_hook(
                lambda _m, inputs: self._features.append(inputs[0].detach()))
        self.backend = "onnx" if self.onnx is not None else "torch"

    def seen_split(self, source, image=None) -> str:
        """"train" / "val" when ``source`` (a path or the file's bytes) or a near copy of it is in this model's
        train or validation split, "" when not, "unknown" when the bundle records no membership (``python -m
        leukoview seen`` adds it). ``image``: the already decoded image, if the caller has it. The file is read
        only when there is a record to look it up in."""
        if self.seen is None:
            return "unknown"
        data = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
        return self.seen.lookup(data, image if image is not None else load_image(data))

    @property
    def locates(self) -> bool:
        """Whether this model crops the located cell first (its card's input spec has a ``locate`` step)."""
        return self.classical is None and bool(self.spec.get("locate"))

    @property
    def cell_level(self) -> bool:
        """Whether this model scores every cell of an image and averages their logits (``cells`` input spec)."""
        return self.classical is None and cell_level(self.spec)

    def locate(self, image) -> CellCrop | None:
        """Where this model's cell-locating step puts the cell (None: the model reads the whole image); for a
        cell-level model, the most suspicious of the image's cells (the one Grad-CAM explains)."""
        if self.classical is not None:
            return None
        if self.cell_level:
            _, found, out = self.predict_cells(image)
            return found[int(np.argmax(out["suspicion"]))]
        return locate(image, self.spec)

    def score_cells(self, image) -> tuple[list[CellCrop], dict[str, np.ndarray]]:
        """A cell-level model's cells of ``image`` and each one's own outputs (:meth:`outputs`), largest first; the
        image's prediction is the mean of these cells' logits."""
        _, found, out = self.predict_cells(image)
        return found, out

    def wrong_kind(self, image, found: list[CellCrop]) -> str:
        """Why a field model does not read ``image`` ('' when it does): a single-cell crop, whose largest cell is
        larger than any cell of a smear field (:data:`FIELD_MAX_CELL`). Single-cell models: ''."""
        if not self.cell_level or not found or not found[0].found:
            return ""
        radius = found[0].side / (2 * float(self.spec["locate"].get("scale", 1.8))) / min(image.size)
        if radius <= FIELD_MAX_CELL:
            return ""
        return (f"a single-cell image (its cell spans {2 * radius:.0%} of the image's side): this model reads "
                "smear fields with several cells, so it gives no verdict here")

    def predict_cells(self, image) -> tuple[Prediction, list[CellCrop], dict[str, np.ndarray]]:
        """A cell-level model's prediction for ``image`` (from the mean of its cells' logits and features), its
        cells, and each cell's own outputs — from one forward pass, for a page that shows all three. A single-cell
        image is flagged (:meth:`wrong_kind`): no verdict."""
        found, arrays = cell_arrays(image, self.spec)
        logits, feats = self._run(list(arrays))
        colours = self.palette_distances([image])
        whole = self.outputs(logits.mean(0, keepdims=True), feats.mean(0, keepdims=True), palette=colours)
        per_cell = None if colours is None else np.repeat(colours, len(logits))  # the cells share their image's
        cells = self.outputs(logits, feats, palette=per_cell)
        why = self.wrong_kind(image, found)
        if why:
            whole["ood_flag"][:] = True
            cells["ood_flag"][:] = True
        return replace(self._prediction(whole), wrong_kind=why), found, cells

    def prepare(self, image, *, located: bool = False):
        """The per-image part of preprocessing (the cell-locating step when the card has one, then resize to the
        input size, as uint8): thread-safe, so batch scoring runs it in worker threads next to the network.
        Classical models take the image as it is."""
        return image if self.classical is not None else resize_array(image, self.spec, located=located)

    def preprocess(self, images: Iterable, *, located: bool = False) -> torch.Tensor:
        """Images -> the normalised NCHW batch the network takes (equal to ``transforms.eval_transform``);
        ``located``: the images are already the located cells."""
        return torch.from_numpy(normalise_batch([self.prepare(im, located=located) for im in images], self.spec))

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits and penultimate features of a preprocessed batch (ONNX Runtime when enabled)."""
        if self.onnx is not None:
            return self.onnx.run(batch.numpy() if isinstance(batch, torch.Tensor) else batch)
        batch = torch.as_tensor(batch)
        self._features.clear()
        logits = self.model(batch.contiguous(memory_format=torch.channels_last))
        feats = self._features[-1].flatten(1) if self._features else torch.zeros(len(batch), 0)
        return logits.float().numpy(), feats.float().numpy()

    def palette_distances(self, images: list) -> np.ndarray | None:
        """The palette check's distances of (whole, original) images, or None when the bundle has no palette
        check (:mod:`leukoview.audits.palette`)."""
        if self.palette is None:
            return None
        from leukoview.models.classical import colour_histogram_rows
        from leukoview.primitives.ood import knn_distances

        return knn_distances(self.palette[0], colour_histogram_rows(images))

    def outputs(self, logits: np.ndarray, features: np.ndarray, *, palette: np.ndarray | None = None
                ) -> dict[str, np.ndarray]:
        """Probabilities (temperature-scaled), suspicion, decision and OOD for a batch of raw outputs. The OOD
        flag fires on the Mahalanobis distance (``ood_score``) or, when the bundle has one, on the wrong-task
        detector (``wrong_task`` score above its threshold) or on the palette check (``palette``: the images'
        :meth:`palette_distances`, above its threshold)."""
        probs = softmax(logits, self.temperature)
        suspicion = probs[:, self.positive_index].sum(1)
        ood = ood_scores(self.ood, features) if self.ood is not None else np.full(len(probs), np.nan)
        flag = ood > self.ood_threshold
        wrong = np.full(len(probs), np.nan)
        if self.wrong_task is not None:
            wrong = linear_scores(self.wrong_task[0], features)
            flag = flag | (wrong > self.wrong_task[1])
        colours = np.full(len(probs), np.nan)
        if self.palette is not None and palette is not None:
            colours = np.asarray(palette, np.float64)
            flag = flag | (colours > self.palette[1])
        return {"probs": probs, "suspicion": suspicion, "decision": suspicion >= self.threshold,
                "ood_score": ood, "ood_flag": flag, "wrong_task": wrong, "palette": colours}

    # `python -m bench.micro_batch --backend torch` on the 2-core CPU (EfficientNet-Lite0, 128 all4 images):
    # micro-batches of 2-4 ran at ~59-63 images/s, 1 at ~49, 16 at ~38, 32 at ~30. ONNX Runtime on the network alone:
    # ~166 (1), ~177 (4), ~169 (16) images/s.
    micro_batch = 4

    @property
    def explainable(self) -> bool:
        """Whether Grad-CAM applies (networks only)."""
        return self.model is not None

    def predict_batch(self, images: list) -> dict[str, np.ndarray]:
        return self.predict_prepared([self.prepare(im) for im in images], palette=self.palette_distances(images))

    def predict_prepared(self, items: list, *, palette: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Outputs for items from :meth:`prepare`, normalised and run one micro-batch at a time (a 4-image float
        batch stays in cache; normalising a 128-image chunk at once cost ~4x more per image). A cell-level model's
        items are stacks of cells: each image's logits and features are the mean over its cells. ``palette``: the
        original images' :meth:`palette_distances` (a bundle with a palette check flags on it only when given)."""
        return self.outputs(*self.raw_outputs(items), palette=palette)

    def raw_outputs(self, items: list) -> tuple[np.ndarray, np.ndarray]:
        """Logits and penultimate features of items from :meth:`prepare` (networks; for a cell-level model the
        mean over each image's cells; classical models: their standardised features, which their OOD checks use)."""
        if self.classical is not None:
            return self.classical.logits_and_features(items)
        if not self.cell_level:
            return self._run(items)
        counts = np.array([len(it) for it in items])
        logits, feats = self._run([cell for it in items for cell in it])
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return (np.add.reduceat(logits, starts, axis=0) / counts[:, None],
                np.add.reduceat(feats, starts, axis=0) / counts[:, None])

    def raw_outputs_of(self, items: list, *, render=None, on_batch=None, batch: int = 32
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Logits and penultimate features of image files (or already decoded PIL images) through this model's own
        preprocessing, ``batch`` at a time; ``render``: a change made to each image first; ``on_batch(done,
        total)`` after each batch."""
        from PIL import Image

        logits, feats = [], []
        for i in range(0, len(items), batch):
            imgs = [x if isinstance(x, Image.Image) else load_image(x) for x in items[i:i + batch]]
            lo, fe = self.raw_outputs([self.prepare(render(m) if render else m) for m in imgs])
            logits.append(lo)
            feats.append(fe)
            if on_batch:
                on_batch(min(i + batch, len(items)), len(items))
        if not logits:
            return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
        return np.concatenate(logits), np.concatenate(feats)

    def _run(self, arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        parts = [self.forward(normalise_batch(arrays[i:i + self.micro_batch], self.spec))
                 for i in range(0, len(arrays), self.micro_batch)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def predict(self, image) -> Prediction:
        if self.cell_level:
            return self.predict_cells(image)[0]
        return self._prediction(self.predict_batch([image]))

    def _prediction(self, out: dict[str, np.ndarray]) -> Prediction:
        probs = out["probs"][0]
        return Prediction(probabilities=dict(zip(self.classes, map(float, probs), strict=False)),
                          predicted=self.classes[int(probs.argmax())], suspicion=float(out["suspicion"][0]),
                          decision=bool(out["decision"][0]), ood_score=float(out["ood_score"][0]),
                          ood_flag=bool(out["ood_flag"][0]))


# --------------------------------------------------------------------------------------------- batch scoring


# Images decoded per step (progress is reported per step). `python -m bench.micro_batch --backend onnx --chunks`
# on the 2-core CPU, 512 all4 images: 16 -> ~120, 32 -> ~137, 64 -> ~149, 128 -> ~154, 256 -> ~154 images/s (the
# network runs slower when it alternates with decoding often). 128 left 1.4 s between progress updates on
# `python -m bench.load_5000`; 64 keeps the bar moving about twice a second for ~3% less throughput.
SCORE_CHUNK = 64


def _decode(path: Path):
    try:
        return load_image(path, name=path.name), ""
    except ImageError as e:
        return None, str(e)
    except OSError as e:  # unreadable file, permissions, vanished
        return None, f"{path.name}: cannot read the file ({e.strerror or e})"


def score_files(paths: list[Path], predictor: Predictor, *, base: Path, batch_size: int = SCORE_CHUNK,
                progress: ProgressFn | None = None, workers: int = 2) -> pd.DataFrame:
    """Score ``paths``; one row each, ``file`` relative to ``base``. Files that cannot be read get an ``error``
    and empty scores; the rest of the batch goes on. For a model that locates the cell first, ``cell_found`` says
    whether a cell was found (False: the whole image was scored), and for a cell-level model ``cells`` how many
    cells were scored (0: none found, the whole image was); ``in_training`` whether the image is in the
    model's train or validation split (:meth:`Predictor.seen_split`). ``decision`` is "positive" / "negative" at the
    threshold, "cannot assess" for an image the OOD flag marks (its score is kept, but it is no verdict), or
    "not a blood-smear image" when the input gate (:func:`leukoview.primitives.segment.smear_gate`) refuses it before
    any model (no score; ``gate`` says why).

    ``workers`` threads decode and resize the next chunk while the network scores the current one (PIL and ONNX
    Runtime both release the GIL), so at most two chunks of images are held at a time."""
    locating = predictor.locates

    def load(path: Path):
        img, err = _decode(path)
        if img is None:
            return None, err, None, "", "", None
        gate = smear_gate(img)
        if gate:  # not a stained blood image: no model sees it
            return None, "", None, "", gate, None
        membership = predictor.seen_split(path, img)
        colours = predictor.palette_distances([img])
        if predictor.cell_level:  # every cell; found: how many (0: none, the whole image was scored)
            found, arrays = cell_arrays(img, predictor.spec)
            return arrays, "", sum(c.found for c in found), membership, predictor.wrong_kind(img, found), colours
        if not locating:
            return predictor.prepare(img), "", None, membership, "", colours
        crop = predictor.locate(img)  # once per image: the crop that is scored is the one reported
        return predictor.prepare(crop_cell(img, crop), located=True), "", crop.found, membership, "", colours

    rows: list[dict] = []
    chunks = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        upcoming = [pool.submit(load, p) for p in chunks[0]] if chunks else []
        for n, chunk in enumerate(chunks):
            loaded = [f.result() for f in upcoming]
            upcoming = [pool.submit(load, p) for p in chunks[n + 1]] if n + 1 < len(chunks) else []
            good = [item for item, *_ in loaded if item is not None]
            colours = None if predictor.palette is None else \
                np.concatenate([c for item, *_, c in loaded if item is not None] or [np.zeros(0)])
            out = predictor.predict_prepared(good, palette=colours) if good else None
            k = 0
            for p, (item, err, found, membership, gate, _) in zip(chunk, loaded, strict=True):
                row = {"file": p.relative_to(base).as_posix() if p.is_relative_to(base) else str(p)}
                kind, gate = (gate, "") if item is not None else ("", gate)  # a scored item's slot: wrong kind
                if item is None:  # unreadable (err), or refused by the input gate (gate: its reason)
                    row.update({c: np.nan for c in predictor.classes})
                    row.update(predicted="", suspicion=np.nan, decision="" if err else NOT_A_SMEAR, ood_score=np.nan,
                               ood_flag="", in_training="", cell_found="", gate=gate, error=err)
                else:
                    probs = out["probs"][k]
                    row.update(dict(zip(predictor.classes, probs.round(6), strict=False)))
                    flagged = bool(out["ood_flag"][k]) or bool(kind)
                    row.update(predicted=predictor.classes[int(probs.argmax())],
                               suspicion=round(float(out["suspicion"][k]), 6),
                               decision=CANNOT_ASSESS if flagged else
                               "positive" if out["decision"][k] else "negative",
                               ood_score=round(float(out["ood_score"][k]), 4), ood_flag=flagged,
                               in_training=membership, cell_found=found, gate="", error="")
                    if predictor.cell_level:
                        row["wrong_kind"] = kind
                    k += 1
                rows.append(row)
            if progress:
                progress(min((n + 1) * batch_size, len(paths)), len(paths))
    if predictor.cell_level:
        for row in rows:
            row["cells"] = row.pop("cell_found")
            row.setdefault("wrong_kind", "")
    columns = ["file", *predictor.classes, "predicted", "suspicion", "decision", "ood_score", "ood_flag",
               "in_training", *((["cells"] if predictor.cell_level else ["cell_found"]) if locating else []),
               *(["wrong_kind"] if predictor.cell_level else []), "gate", "error"]
    return pd.DataFrame(rows, columns=columns)


def score_folder(folder: Path, predictor: Predictor, **kwargs) -> pd.DataFrame:
    """Score every image under ``folder`` (recursively); see :func:`score_files`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    return score_files(find_images(folder), predictor, base=folder, **kwargs)
