"""The one place preprocessing and augmentation are built, always from an input spec (a card's or a registry
entry's), so training, evaluation, the CLI and the app cannot drift apart.

An input spec is ``{"size", "mean", "std"}`` and, for models that look at one cell, ``"locate": {"method":
"nucleus", "scale": 1.6}``: the cell-locating step of :func:`leukoview.primitives.segment.locate_cell` runs first, so
the cell fills the input the same way whatever the camera. Bundles without ``locate`` are resized whole, as before.

``"locate": {"method": "cells", "scale": 1.8, "max_cells": 6}`` is the cell-level mode of the ALL model: every
stained cell of a field is found (:func:`leukoview.primitives.segment.find_cells`) and scored on its own, and the
field's logits are the mean of its cells' logits (:func:`cell_views`); a single-cell image is one cell. In training each
field gives one of its cells at random, with the field's label.

``"colour": {"method": "reinhard", "target_mean", "target_std"}`` standardises every input's colours after it is
resized (:func:`leukoview.primitives.augment.normalise_lab`: each channel of Reinhard's l-alpha-beta space given the
card's target mean and spread), so a camera's or stain's colour cast does not reach the network; training normalises
after its augmentation, so the network sees normalised colours only. Bundles without it see colours as taken."""
from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as F

from leukoview.primitives.augment import (
    LAB_TARGET_MEAN,
    LAB_TARGET_STD,
    AcquisitionJitter,
    BackgroundSwap,
    normalise_lab,
)
from leukoview.primitives.segment import CellCrop, crop_cell, find_cells, locate_cell, square_box

METHODS = ("nucleus", "cells")
COLOUR_METHODS = ("reinhard",)


def colour_spec(method: str) -> dict:
    """The input spec's ``colour`` entry for a normalisation method (its targets written out, so a card keeps
    exactly what training did even if the defaults change)."""
    _known_colour_method(method)
    return {"method": "reinhard", "target_mean": [round(float(v), 5) for v in LAB_TARGET_MEAN],
            "target_std": [round(float(v), 5) for v in LAB_TARGET_STD],
            "what": "Reinhard colour normalisation: each channel of l-alpha-beta standardised to fixed targets"}


def normalise_colour(img: Image.Image, spec: dict) -> Image.Image:
    """``img`` with the spec's colour normalisation applied (unchanged when the spec has none)."""
    colour = spec.get("colour")
    if not colour:
        return img
    _known_colour_method(colour.get("method"))
    return normalise_lab(img, mean=colour.get("target_mean"), std=colour.get("target_std"))


SHARPEN_METHODS = ("unsharp",)


def sharpen_spec(percent: float, radius: float) -> dict:
    """The input spec's ``sharpen`` entry: PIL's unsharp mask of the resized, colour-normalised input."""
    return {"method": "unsharp", "radius": float(radius), "percent": int(percent), "threshold": 0,
            "what": f"unsharp mask (radius {radius:g} px at the input size, {int(percent)}%) after the colour step"}


def sharpen(img: Image.Image, spec: dict) -> Image.Image:
    """``img`` with the spec's sharpening applied (unchanged when the spec has none)."""
    how = spec.get("sharpen")
    if not how:
        return img
    if how.get("method") not in SHARPEN_METHODS:
        raise ValueError(f"unknown sharpening {how.get('method')!r}; known: {list(SHARPEN_METHODS)}")
    from PIL import ImageFilter

    return img.filter(ImageFilter.UnsharpMask(radius=float(how["radius"]), percent=int(how["percent"]),
                                              threshold=int(how.get("threshold", 0))))


def finish_input(img: Image.Image, spec: dict) -> Image.Image:
    """The steps after the resize, in order: colour normalisation, then sharpening (each when the spec has it)."""
    return sharpen(normalise_colour(img, spec), spec)


def _known_colour_method(method) -> None:
    if method not in COLOUR_METHODS:
        raise ValueError(f"unknown colour normalisation {method!r}; known: {list(COLOUR_METHODS)}")


def _finish_steps(spec: dict) -> list:
    """:func:`finish_input` (colour normalisation, sharpening) as a transform step of a Compose (none when the spec
    has neither); a partial of a module function, so DataLoader workers can pickle it."""
    return [functools.partial(finish_input, spec=spec)] if spec.get("colour") or spec.get("sharpen") else []


def _method(spec: dict) -> str:
    how = spec.get("locate") or {}
    method = how.get("method", "nucleus")
    if method not in METHODS:
        raise ValueError(f"unknown cell-locating method {method!r}; this leukoview knows {', '.join(METHODS)}")
    return method


def cell_level(spec: dict) -> bool:
    """Whether the spec scores every cell of an image and averages them (the ``cells`` method)."""
    return bool(spec.get("locate")) and _method(spec) == "cells"


def cells(img: Image.Image, spec: dict) -> list[CellCrop]:
    """The cells a ``cells`` spec scores in ``img``, largest first; the whole image (``found=False``) when none."""
    how = spec["locate"]
    found = find_cells(img, scale=float(how.get("scale", 1.8)), max_cells=int(how.get("max_cells", 6)))
    w, h = img.size
    return found or [CellCrop((0, 0, w, h), False, "no cell found: the whole image is used")]


def locate(img: Image.Image, spec: dict) -> CellCrop | None:
    """Where the spec's locating step puts the cell in ``img`` (None when the spec has no locating step); for a
    ``cells`` spec, the largest cell."""
    how = spec.get("locate")
    if not how:
        return None
    if _method(spec) == "cells":
        return cells(img, spec)[0]
    return locate_cell(img, scale=float(how.get("scale", 1.6)), min_side=float(how.get("min_side", 0.0)),
                       inside=bool(how.get("inside", False)))


def cell_views(img: Image.Image, spec: dict) -> tuple[list[CellCrop], list[Image.Image]]:
    """For a ``cells`` spec: the cells and their crops, as the network scores them one by one."""
    found = cells(img, spec)
    return found, [crop_cell(img, c) for c in found]


def network_view(img: Image.Image, spec: dict) -> Image.Image:
    """The part of ``img`` the network sees: the located cell's square, or the whole image."""
    crop = locate(img, spec)
    return img if crop is None else crop_cell(img, crop)


class LocateCell:
    """The locating step as a transform; in training, the box is jittered in scale and position (``jitter``), so
    the model does not depend on the exact framing the locator gives."""

    def __init__(self, spec: dict, *, jitter: float = 0.0):
        self.spec, self.jitter = spec, jitter

    def __call__(self, img):
        if cell_level(self.spec):  # training on a field: one of its cells, at random
            found = cells(img, self.spec)
            crop = found[int(np.random.randint(len(found)))]
        else:
            crop = locate(img, self.spec)
        return img if crop is None else self.crop(img, crop)

    def crop(self, img, crop: CellCrop):
        """``img`` cut to ``crop``'s box, jittered in training."""
        if self.jitter:
            left, top, right, bottom = crop.box
            side = (right - left) * float(np.exp(np.random.uniform(-self.jitter, self.jitter)))
            cx = (left + right) / 2 + np.random.uniform(-self.jitter, self.jitter) * side / 2
            cy = (top + bottom) / 2 + np.random.uniform(-self.jitter, self.jitter) * side / 2
            how = self.spec.get("locate") or {}
            box = square_box(cx, cy, side, *img.size, inside=bool(how.get("inside", False)))
            crop = CellCrop(box, crop.found, crop.note)
        return crop_cell(img, crop)


class RandomRot90:
    """Rotate by a random multiple of 90 degrees: smears have no up."""

    def __call__(self, img):
        k = int(torch.randint(0, 4, ()).item())
        return img if k == 0 else img.rotate(90 * k)


def eval_transform(spec: dict):
    """PIL RGB image -> normalised float tensor CxHxW; for a ``cells`` spec, KxCxHxW (one per cell)."""
    size = int(spec["size"])
    one = T.Compose([T.Resize((size, size), interpolation=T.InterpolationMode.BILINEAR, antialias=True),
                     *_finish_steps(spec),
                     T.ToTensor(), T.Normalize(spec["mean"], spec["std"])])
    if cell_level(spec):
        return lambda img: torch.stack([one(view) for view in cell_views(img, spec)[1]])
    return T.Compose([LocateCell(spec), one]) if spec.get("locate") else one


def resize_array(img: Image.Image, spec: dict, *, located: bool = False) -> np.ndarray:
    """The PIL half of :func:`eval_transform` (the locating step unless ``located``: ``img`` is already the
    located cell; then the same bilinear, antialiased resize) as a uint8 HxWx3 array.

    Safe to call from threads (PIL releases the GIL while resizing); :func:`normalise_batch` finishes the job
    for a whole batch at once, which is ~5x cheaper per image than ``ToTensor`` + ``Normalize`` one by one."""
    size = int(spec["size"])
    if not located and cell_level(spec):  # every cell: K x H x W x 3
        return cell_arrays(img, spec)[1]
    img = img if located else network_view(img, spec)
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(finish_input(img, spec), dtype=np.uint8)


def cell_arrays(img: Image.Image, spec: dict) -> tuple[list[CellCrop], np.ndarray]:
    """For a ``cells`` spec: the cells and their crops resized for the network, K x H x W x 3 uint8."""
    found, views = cell_views(img, spec)
    return found, np.stack([resize_array(v, spec, located=True) for v in views])


def normalise_batch(arrays: list[np.ndarray], spec: dict) -> np.ndarray:
    """uint8 HxWx3 arrays -> float32 NxCxHxW, equal to ``eval_transform`` to float rounding."""
    x = np.stack(arrays)
    mean = np.asarray(spec["mean"], dtype=np.float32)
    std = np.asarray(spec["std"], dtype=np.float32)
    scale = (1.0 / (255.0 * std)).astype(np.float32)
    shift = (-mean / std).astype(np.float32)
    out = np.empty((x.shape[0], 3, x.shape[1], x.shape[2]), dtype=np.float32)
    for c in range(3):  # per channel: one multiply-add over contiguous planes
        np.multiply(x[..., c], scale[c], out=out[:, c], casting="unsafe")
        out[:, c] += shift[c]
    return out


class EveryCell:
    """Training on a field, multiple-instance: every cell the locator finds (as at evaluation), each cut with its own
    box jitter and put through ``per_cell`` (the rest of the augmentation) -> K x C x H x W."""

    def __init__(self, spec: dict, per_cell, *, jitter: float = 0.0):
        self.spec, self.per_cell, self.locator = spec, per_cell, LocateCell(spec, jitter=jitter)

    def __call__(self, img):
        return torch.stack([self.per_cell(self.locator.crop(img, c)) for c in cells(img, self.spec)])


def train_transform(spec: dict, *, colour: float = 0.1, acquisition: bool = False, stain: float = 0.1,
                    lowres: float = 0.0, crop_jitter: float = 0.15, background: float = 0.0,
                    all_cells: bool = False):
    """Augmentation suited to smears: mild crop-rescale, flips, 90-degree rotations, mild colour jitter; with
    ``acquisition`` first stain (HED) jitter, background recolouring, rescale, blur, JPEG re-compression and
    greyscale (:class:`leukoview.primitives.augment.AcquisitionJitter`), so the model cannot lean on how images were
    taken. ``all_cells`` (a ``cells`` spec): every cell of the field, each augmented on its own (:class:`EveryCell`)."""
    size = int(spec["size"])
    if all_cells:
        if not cell_level(spec):
            raise ValueError("all_cells needs a cell-level input spec (locate method 'cells')")
        per_cell = train_transform({k: v for k, v in spec.items() if k != "locate"}, colour=colour,
                                   acquisition=acquisition, stain=stain, lowres=lowres, background=background)
        return EveryCell(spec, per_cell, jitter=crop_jitter)
    first = [LocateCell(spec, jitter=crop_jitter)] if spec.get("locate") else []
    if acquisition:
        # work at about the crop's scale: the colour operations cost per pixel (wbc5 images are 400 px)
        first += [T.Resize(int(size * 1.15), interpolation=T.InterpolationMode.BILINEAR, antialias=True),
                  *([BackgroundSwap(p=background, p_corners=background)] if background else []),
                  AcquisitionJitter(stain=stain, p_lowres=lowres)]
    return T.Compose([*first,
        T.RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(0.9, 1.1), antialias=True),
        T.RandomHorizontalFlip(), T.RandomVerticalFlip(), RandomRot90(),
        T.ColorJitter(brightness=colour, contrast=colour, saturation=colour, hue=colour / 5),
        *_finish_steps(spec),
        T.ToTensor(), T.Normalize(spec["mean"], spec["std"]),
    ])


def resize_for_display(img, spec: dict, *, located: bool = False):
    """The image exactly as the network sees it (located cell, resized, colour-normalised when the card says so;
    before the tensor normalisation), as PIL;
    ``located``: ``img`` is already the located cell."""
    size = int(spec["size"])
    return finish_input(F.resize(img if located else network_view(img, spec), [size, size],
                                     interpolation=T.InterpolationMode.BILINEAR, antialias=True), spec)
