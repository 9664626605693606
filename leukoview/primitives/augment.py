"""Acquisition augmentation: image operations that change how a smear was taken but not the cell (PIL RGB in, PIL
RGB out), and :class:`AcquisitionJitter`, the training augmentation built from them. The shift test
(:mod:`leukoview.audits.shift`) re-renders test images with the same operations at fixed strengths.

- :func:`hed_jitter`: stain variation in haematoxylin-eosin-DAB optical-density space (Ruifrok & Johnston 2001
  colour deconvolution; Tellez et al. 2018 style scale and shift per stain);
- :func:`recolour_background`: the unstained background (:func:`leukoview.primitives.segment.background_mask`)
recoloured,
  keeping its texture (what a different scanner or illumination does);
- :func:`rescale`: zoom in (centre crop) or out (shrink and pad with the background colour);
- :func:`blur`, :func:`lowres` (down- and up-sampling: a low-resolution camera) and :func:`jpeg` re-compression.
"""
from __future__ import annotations

import io
import random

import numpy as np
from PIL import Image, ImageFilter

from leukoview.primitives.segment import background_colour, background_mask

# Ruifrok & Johnston stain vectors (rows: haematoxylin, eosin, DAB), optical density per RGB channel
_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], np.float64)
_HED /= np.linalg.norm(_HED, axis=1, keepdims=True)
_HED_INV = np.linalg.inv(_HED).astype(np.float32)
_HED = _HED.astype(np.float32)


def hed_jitter(img: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    """Scale each stain's concentration by U(1-sigma, 1+sigma) and shift it by U(-sigma, sigma)."""
    rgb = np.asarray(img, np.float32)
    od = -np.log((rgb + 1) / 256)
    conc = od.reshape(-1, 3) @ _HED_INV
    alpha = rng.uniform(1 - sigma, 1 + sigma, 3).astype(np.float32)
    beta = rng.uniform(-sigma, sigma, 3).astype(np.float32)
    conc = conc * alpha + beta
    out = 256 * np.exp(-(conc @ _HED)) - 1
    return Image.fromarray(np.clip(out.reshape(rgb.shape), 0, 255).astype(np.uint8))


def recolour_background(img: Image.Image, colour) -> Image.Image:
    """Move the background's colour to ``colour`` (RGB), keeping its texture; stained pixels are untouched."""
    arr = np.asarray(img, np.float64).copy()
    mask = background_mask(img)
    if mask.any():
        arr[mask] += np.asarray(colour, np.float64) - np.median(arr[mask], 0)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def rescale(img: Image.Image, factor: float) -> Image.Image:
    """``factor`` > 1 zooms in (centre crop), < 1 zooms out (shrink, pad with the background colour)."""
    w, h = img.size
    if factor >= 1:
        cw, ch = int(round(w / factor)), int(round(h / factor))
        left, top = (w - cw) // 2, (h - ch) // 2
        return img.crop((left, top, left + cw, top + ch)).resize((w, h), Image.Resampling.BILINEAR)
    small = img.resize((max(1, int(round(w * factor))), max(1, int(round(h * factor)))), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (w, h), tuple(int(v) for v in background_colour(img)))
    canvas.paste(small, ((w - small.width) // 2, (h - small.height) // 2))
    return canvas


def blur(img: Image.Image, sigma: float) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(sigma))


def lowres(img: Image.Image, factor: float) -> Image.Image:
    """Down-sample to ``factor`` of the size and back up (bilinear): what a low-resolution camera leaves."""
    w, h = img.size
    small = img.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.BILINEAR)
    return small.resize((w, h), Image.Resampling.BILINEAR)


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


class AcquisitionJitter:
    """Training augmentation: each operation applied with its probability, with random strength."""

    def __init__(self, *, stain: float = 0.1, p_grey: float = 0.1, p_background: float = 0.5,
                 p_rescale: float = 0.3, p_blur: float = 0.3, p_jpeg: float = 0.3, p_lowres: float = 0.0):
        self.stain, self.p_grey, self.p_background = stain, p_grey, p_background
        self.p_rescale, self.p_blur, self.p_jpeg, self.p_lowres = p_rescale, p_blur, p_jpeg, p_lowres

    def __call__(self, img: Image.Image) -> Image.Image:
        rng = np.random.default_rng(random.getrandbits(32))
        if self.stain:
            img = hed_jitter(img, self.stain, rng)
        if rng.random() < self.p_background:  # a pale background of random tint (any scanner's)
            img = recolour_background(img, rng.uniform([170, 170, 170], [250, 250, 250]))
        if rng.random() < self.p_rescale:
            img = rescale(img, float(rng.uniform(0.7, 1.4)))
        if rng.random() < self.p_blur:
            img = blur(img, float(rng.uniform(0.3, 1.5)))
        if self.p_lowres and rng.random() < self.p_lowres:
            img = lowres(img, float(rng.uniform(0.25, 0.6)))
        if rng.random() < self.p_jpeg:
            img = jpeg(img, int(rng.integers(30, 90)))
        if rng.random() < self.p_grey:
            img = img.convert("L").convert("RGB")
        return img


def cell_mask(img: Image.Image, *, grow: int = 3) -> np.ndarray:
    """The stained pixels (cells: :func:`leukoview.primitives.segment.regions`), dilated by ``grow`` pixels."""
    from scipy import ndimage

    from leukoview.primitives.segment import regions

    return ndimage.binary_dilation(regions(np.asarray(img))["stained"], iterations=grow)


def replace_background(img: Image.Image, fill: np.ndarray, *, mask: np.ndarray | None = None) -> Image.Image:
    """Keep the cells, put ``fill`` (an HxWx3 array, or one RGB colour) everywhere else."""
    arr = np.asarray(img, np.float32).copy()
    keep = cell_mask(img) if mask is None else mask
    fill = np.broadcast_to(np.asarray(fill, np.float32), arr.shape)
    arr[~keep] = fill[~keep]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def background_only(img: Image.Image) -> np.ndarray:
    """An image's background with its cells painted over in its own background colour (HxWx3 float): another
    image's background to put behind a cell, without that image's cells."""
    arr = np.asarray(img, np.float32).copy()
    arr[cell_mask(img)] = background_colour(img)
    return arr


class BackgroundSwap:
    """Training augmentation that takes the background away as a cue: with probability ``p`` the cells are kept
    (stained mask, dilated) and everything else becomes a flat colour, a blurred colour field, black, white, or
    the background of the previous image this worker saw; with probability ``p_corners`` the four corner squares
    (15 % of the side, where scale bars and labels sit) are painted over the same way."""

    def __init__(self, *, p: float = 0.5, p_corners: float = 0.5):
        self.p, self.p_corners = p, p_corners
        self._previous: np.ndarray | None = None

    def _fill(self, shape, rng: np.random.Generator) -> np.ndarray:
        kind = int(rng.integers(0, 5))
        if kind == 0:
            return rng.uniform(0, 255, 3)
        if kind == 1:
            small = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
            return np.asarray(small.resize((shape[1], shape[0]), Image.Resampling.BICUBIC), np.float32)
        if kind == 2:
            return np.zeros(3)
        if kind == 3 or self._previous is None or self._previous.shape != shape:
            return np.full(3, 255.0)
        return self._previous

    def __call__(self, img: Image.Image) -> Image.Image:
        rng = np.random.default_rng(random.getrandbits(32))
        arr = np.asarray(img)
        out = img
        if rng.random() < self.p:
            out = replace_background(img, self._fill(arr.shape, rng))
        if rng.random() < self.p_corners:
            h, w = arr.shape[:2]
            c = max(1, int(round(0.15 * min(h, w))))
            corners = np.zeros((h, w), bool)
            corners[:c, :c] = corners[:c, -c:] = corners[-c:, :c] = corners[-c:, -c:] = True
            o = np.asarray(out).copy()
            fill = np.broadcast_to(np.asarray(self._fill(arr.shape, rng), np.float32), arr.shape)
            o[corners] = fill[corners].astype(np.uint8)
            out = Image.fromarray(o)
        self._previous = background_only(img)  # the next image may get this one's background, not its cells
        return out


# --------------------------------------------------------------------------------------------- colour normalisation

# Reinhard et al. 2001 (Color transfer between images): RGB -> LMS -> log10 -> l-alpha-beta, decorrelated axes
_RGB2LMS = np.array([[0.3811, 0.5783, 0.0402], [0.1967, 0.7244, 0.0782], [0.0241, 0.1288, 0.8444]], np.float32)
_LMS2RGB = np.linalg.inv(_RGB2LMS.astype(np.float64)).astype(np.float32)
_LOG2LAB = (np.diag([1 / np.sqrt(3), 1 / np.sqrt(6), 1 / np.sqrt(2)])
            @ np.array([[1, 1, 1], [1, 1, -2], [1, -1, 0]])).astype(np.float32)
_LAB2LOG = np.linalg.inv(_LOG2LAB.astype(np.float64)).astype(np.float32)
# target statistics (mean and spread of l, alpha, beta): the average over 100 located cells of wbc9's PBC training
# images (LMU: 3.86 / -0.096 / 0.014, spreads 0.35 / 0.17 / 0.026; BCCD's spreads are a third of PBC's)
LAB_TARGET_MEAN = np.array([3.85, -0.024, 0.0124], np.float32)
LAB_TARGET_STD = np.array([0.284, 0.112, 0.0084], np.float32)
STD_FLOOR = 0.2


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> float32 l-alpha-beta (Reinhard's decorrelated colour space)."""
    lms = (rgb.reshape(-1, 3).astype(np.float32) + 1.0) @ _RGB2LMS.T
    return (np.log10(lms) @ _LOG2LAB.T).reshape(rgb.shape)


def from_lab(lab: np.ndarray) -> np.ndarray:
    lms = 10.0 ** (lab.reshape(-1, 3) @ _LAB2LOG.T)
    return np.clip(lms @ _LMS2RGB.T - 1.0, 0, 255).reshape(lab.shape).astype(np.uint8)


def normalise_lab(img: Image.Image, *, mean=None, std=None) -> Image.Image:
    """Reinhard colour normalisation: each l-alpha-beta channel of the image standardised, then given fixed target
    means and spreads, so every camera's and stain's colour cast maps onto one (a channel's spread is stretched at
    most 1 / STD_FLOOR times: a grey or flat image keeps its flatness). Whole-image statistics: used on a located
    cell, whose framing (a fixed multiple of the nucleus) keeps the cell-to-background share similar.

    Kept operation for operation as the shipped model was trained with: a faster algebraically equal form (one
    affine map in log-LMS space) differed by one grey level at some pixels, which moved a stored test score by
    5e-4; stored predictions must reproduce to 1e-4."""
    lab = to_lab(np.asarray(img.convert("RGB")))
    flat = lab.reshape(-1, 3)
    target_mean = LAB_TARGET_MEAN if mean is None else np.asarray(mean, np.float32)
    target_std = LAB_TARGET_STD if std is None else np.asarray(std, np.float32)
    own_mean, own_std = flat.mean(0), np.maximum(flat.std(0), STD_FLOOR * target_std)
    lab = (lab - own_mean) / own_std * target_std + target_mean
    return Image.fromarray(from_lab(lab))
