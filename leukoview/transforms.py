"""The one place preprocessing and augmentation are built, always from an input spec (a card's or a registry
entry's), so training, evaluation, the CLI and the app cannot drift apart."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as F


class RandomRot90:
    """Rotate by a random multiple of 90 degrees: smears have no up."""

    def __call__(self, img):
        k = int(torch.randint(0, 4, ()).item())
        return img if k == 0 else img.rotate(90 * k)


def eval_transform(spec: dict):
    """PIL RGB image -> normalised float tensor CxHxW."""
    size = int(spec["size"])
    return T.Compose([T.Resize((size, size), interpolation=T.InterpolationMode.BILINEAR, antialias=True),
                      T.ToTensor(), T.Normalize(spec["mean"], spec["std"])])


def resize_array(img: Image.Image, spec: dict) -> np.ndarray:
    """The PIL half of :func:`eval_transform` (same bilinear, antialiased resize) as a uint8 HxWx3 array.

    Safe to call from threads (PIL releases the GIL while resizing); :func:`normalise_batch` finishes the job
    for a whole batch at once, which is ~5x cheaper per image than ``ToTensor`` + ``Normalize`` one by one."""
    size = int(spec["size"])
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


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


def train_transform(spec: dict, *, colour: float = 0.1, acquisition: bool = False, stain: float = 0.1):
    """Augmentation suited to smears: mild crop-rescale, flips, 90-degree rotations, mild colour jitter; with
    ``acquisition`` first stain (HED) jitter, background recolouring, rescale, blur, JPEG re-compression and
    greyscale (:class:`leukoview.shift.AcquisitionJitter`), so the model cannot lean on how images were taken."""
    size = int(spec["size"])
    first = []
    if acquisition:
        from .shift import AcquisitionJitter

        # work at about the crop's scale: the colour operations cost per pixel (wbc5 images are 400 px)
        first = [T.Resize(int(size * 1.15), interpolation=T.InterpolationMode.BILINEAR, antialias=True),
                 AcquisitionJitter(stain=stain)]
    return T.Compose([*first,
        T.RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(0.9, 1.1), antialias=True),
        T.RandomHorizontalFlip(), T.RandomVerticalFlip(), RandomRot90(),
        T.ColorJitter(brightness=colour, contrast=colour, saturation=colour, hue=colour / 5),
        T.ToTensor(), T.Normalize(spec["mean"], spec["std"]),
    ])


def denormalise(tensor: torch.Tensor, spec: dict) -> torch.Tensor:
    """Inverse of the normalisation: CxHxW tensor back to [0, 1]."""
    mean = torch.tensor(spec["mean"]).view(3, 1, 1)
    std = torch.tensor(spec["std"]).view(3, 1, 1)
    return (tensor * std + mean).clamp(0, 1)


def resize_for_display(img, spec: dict):
    """The image exactly as the network sees it (before normalisation), as PIL, for overlays."""
    size = int(spec["size"])
    return F.resize(img, [size, size], interpolation=T.InterpolationMode.BILINEAR, antialias=True)
