"""Colour segmentation of smear images (pure numpy + PIL): Otsu thresholds, the stained / nucleus-dark /
background / corner regions, and the background colour. Shared by the augmentation, the shift test and the
Grad-CAM statistics.

- *stained*: HSV saturation above its Otsu threshold (nuclei, cytoplasm, red cells);
- *nucleus-dark*: stained pixels darker than the Otsu threshold of brightness among stained pixels;
- *background*: the rest;
- *corners*: four squares of ``corner`` (15 %) of the side, where scale bars and labels sit.

And the cell-locating step (:func:`locate_cell`, :func:`crop_cell`): the leukocyte's nucleus found by stain
colour, a square around it scaled to its size, so a cell fills the network's input the same way whatever the
camera, magnification or framing. Training, evaluation, scoring, the pages and Grad-CAM all apply it through
the input spec (:mod:`leukoview.models.transforms`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image

REGIONS = ("stained", "nucleus-dark", "background", "corners")


def otsu(values: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold of ``values`` (maximises the between-class variance)."""
    values = np.asarray(values, np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between))])


def regions(image: np.ndarray, *, corner: float = 0.15) -> dict[str, np.ndarray]:
    """Boolean masks of the regions (:data:`REGIONS`) of an HxWx3 uint8 image."""
    hsv = np.asarray(Image.fromarray(image).convert("HSV"), np.float32)
    sat, gray = hsv[..., 1], image.astype(np.float32).mean(2)
    stained = sat > otsu(sat)
    nucleus = stained & (gray < otsu(gray[stained])) if stained.sum() > 16 else np.zeros_like(stained)
    h, w = stained.shape
    c = max(1, int(round(corner * min(h, w))))
    corners = np.zeros_like(stained)
    corners[:c, :c] = corners[:c, -c:] = corners[-c:, :c] = corners[-c:, -c:] = True
    return {"stained": stained, "nucleus-dark": nucleus, "background": ~stained, "corners": corners}


def background_mask(img: Image.Image) -> np.ndarray:
    """The unstained pixels of a PIL image."""
    return regions(np.asarray(img))["background"]


def background_colour(img: Image.Image) -> np.ndarray:
    """Median RGB of the background (the mean colour when nothing is background)."""
    arr = np.asarray(img, np.float64)
    mask = background_mask(img)
    return np.median(arr[mask], 0) if mask.any() else arr.reshape(-1, 3).mean(0)


# --------------------------------------------------------------------------------------------- cell locating

LOCATE_SIDE = 128  # the locating step works on a thumbnail of at most this side: ~1 ms, whatever the camera


@dataclass(frozen=True)
class CellCrop:
    """Where the cell is: a square ``box`` (left, top, right, bottom) in the original image's pixels, which may
    reach past the image (the crop is then padded with the background colour). ``found`` is False when no cell
    was found and the box is the whole image; ``note`` says what was done, in words for the page."""

    box: tuple[int, int, int, int]
    found: bool
    note: str

    @property
    def side(self) -> int:
        return self.box[2] - self.box[0]


def nucleus_mask(image: np.ndarray) -> np.ndarray:
    """Stained-nucleus pixels of an HxWx3 uint8 image: blue minus green above its Otsu threshold. Romanowsky stains
    colour leukocyte nuclei (and blasts' cytoplasm) violet to blue, red cells pink and the background pale in any
    tint, so blue-over-green separates them across scanners. Empty when the image has no such contrast."""
    arr = image.astype(np.float32)
    score = arr[..., 2] - arr[..., 1]
    fg = score > otsu(score)
    if not fg.any() or fg.all() or float(score[fg].mean() - score[~fg].mean()) < 30 \
            or float(np.quantile(score, 0.99)) < 40:  # no violet-blue object stands out
        return np.zeros(score.shape, bool)
    return fg


def locate_cell(img: Image.Image, *, scale: float = 1.6, min_area: float = 0.002, min_side: float = 0.0,
                inside: bool = False) -> CellCrop:
    """The leukocyte of a single-cell image: the largest stained-nucleus component (weighted towards the centre,
    where cell crops put their cell), boxed by a square ``scale`` times the component's larger side, centred on it.
    Falls back to the whole image (``found=False``) when no component covers ``min_area`` of the image.

    ``min_side`` (a fraction of the image's shorter side) stops a tiny object (a platelet) being blown up to fill
    the input as a blurry blob that looks like a low-resolution camera's leukocyte; ``inside`` keeps the square
    within the image (shrunk to the shorter side and shifted in) instead of padding it with a flat colour, for
    crops whose cell fills the frame."""
    from scipy import ndimage

    w, h = img.size
    k = max(w, h) / LOCATE_SIDE
    thumb = img if k <= 1 else img.resize((max(1, round(w / k)), max(1, round(h / k))), Image.Resampling.BILINEAR)
    k = w / thumb.width
    mask = nucleus_mask(np.asarray(thumb))
    mask = ndimage.binary_opening(mask, iterations=1)
    labels, n = ndimage.label(ndimage.binary_closing(mask, iterations=2))
    whole = CellCrop((0, 0, w, h), False, "no cell found: the whole image is used")
    if n == 0:
        return whole
    th, tw = labels.shape
    flat = labels.ravel()
    # each component's area and centre in one pass over the pixels (per-label scipy calls cost ~1 ms an image)
    areas = np.bincount(flat, minlength=n + 1)[1:].astype(np.float64)
    yy, xx = np.divmod(np.arange(flat.size), tw)
    centres = np.stack([np.bincount(flat, yy, n + 1)[1:], np.bincount(flat, xx, n + 1)[1:]], 1) / areas[:, None]
    d2 = ((centres[:, 0] - th / 2) / th) ** 2 + ((centres[:, 1] - tw / 2) / tw) ** 2
    best = int(np.argmax(areas * np.exp(-d2 / (2 * 0.3 ** 2))))
    if areas[best] < min_area * th * tw:
        return whole
    rows, cols = ndimage.find_objects(labels, max_label=best + 1)[best]
    cy, cx = (rows.start + rows.stop) / 2 * k, (cols.start + cols.stop) / 2 * k
    side = max(rows.stop - rows.start, cols.stop - cols.start) * k * scale
    box = square_box(cx, cy, side, w, h, min_side=min_side, inside=inside)
    return CellCrop(box, True, f"cell found: a {box[2] - box[0]}-px square around its nucleus ({scale:g}x the nucleus)")


def square_box(cx: float, cy: float, side: float, w: int, h: int, *, min_side: float = 0.0,
               inside: bool = False) -> tuple[int, int, int, int]:
    """The integer square of ``side`` centred on (cx, cy) in a ``w`` x ``h`` image: at least ``min_side`` of the
    shorter side and 8 px; with ``inside``, at most the shorter side and shifted to lie within the image."""
    short = min(w, h)
    side = max(8.0, side, min_side * short)
    if inside:
        side = min(side, short)
    s = int(round(side))
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    if inside:
        left, top = min(max(left, 0), w - s), min(max(top, 0), h - s)
    return left, top, left + s, top + s


CELLS_SIDE = 224  # find_cells works on a thumbnail of at most this side (all4 fields are 224 px)


def purple_mask(image: np.ndarray) -> np.ndarray:
    """Violet-stained pixels of an HxWx3 uint8 image: (red + blue) / 2 minus green above its Otsu threshold, opened
    and hole-filled. Lymphoid cells (nucleus and the thin blue cytoplasm) are violet; red cells in the ALL fields
    are grey-blue and the background pale, so this keeps whole lymphoid cells where the nucleus mask keeps nuclei."""
    from scipy import ndimage

    arr = image.astype(np.float32)
    score = (arr[..., 0] + arr[..., 2]) / 2 - arr[..., 1]
    fg = score > otsu(score)
    if not fg.any() or fg.all() or float(score[fg].mean() - score[~fg].mean()) < 15:
        return np.zeros(score.shape, bool)
    return fill_holes(ndimage.binary_opening(fg, iterations=2))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes`` of a 2-d mask, the same pixels about 5x faster: the unset pixels that no
    4-connected path of unset pixels links to the image's edge are holes."""
    from scipy import ndimage

    labels, n = ndimage.label(~mask)
    if n == 0:
        return mask.copy()
    edge = np.zeros(n + 1, bool)
    edge[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    edge[0] = True  # label 0: the mask's own pixels
    return ~edge[labels] | mask


def find_cells(img: Image.Image, *, scale: float = 1.8, max_cells: int = 6, min_radius: float = 0.035
               ) -> list[CellCrop]:
    """The stained (lymphoid) cells of a field, largest first: peaks of the distance transform of
    :func:`purple_mask` at least ``min_radius`` of the shorter side deep (a cell's inscribed radius), each kept
    only if no larger one already covers its centre (touching cells stay apart), each boxed by a square of side
    2 x ``scale`` x its radius. At most ``max_cells``; empty when none is found. A single-cell image gives one box."""
    from scipy import ndimage

    w, h = img.size
    k = max(w, h) / CELLS_SIDE
    thumb = img if k <= 1 else img.resize((max(1, round(w / k)), max(1, round(h / k))), Image.Resampling.BILINEAR)
    k = w / thumb.width
    mask = purple_mask(np.asarray(thumb))
    if not mask.any():
        return []
    depth = ndimage.distance_transform_edt(mask)
    r_min = min_radius * min(mask.shape)
    window = max(3, int(round(2 * r_min)) | 1)
    peaks = np.argwhere((depth == ndimage.maximum_filter(depth, size=window)) & (depth >= r_min))
    order = np.argsort(-depth[peaks[:, 0], peaks[:, 1]], kind="stable")
    kept: list[tuple[float, float, float]] = []
    for i in order:
        y, x = peaks[i]
        r = float(depth[y, x])
        if all((y - ky) ** 2 + (x - kx) ** 2 > max(r, kr) ** 2 for ky, kx, kr in kept):
            kept.append((float(y), float(x), r))
            if len(kept) >= max_cells:
                break
    crops = []
    for y, x, r in kept:
        s = max(8, int(round(2 * scale * r * k)))
        cx, cy = (x + 0.5) * k, (y + 0.5) * k
        left, top = int(round(cx - s / 2)), int(round(cy - s / 2))
        crops.append(CellCrop((left, top, left + s, top + s), True,
                              f"cell found: a {s}-px square around it ({scale:g}x its inscribed diameter)"))
    return crops


def crop_cell(img: Image.Image, crop: CellCrop) -> Image.Image:
    """The square of ``crop.box`` from ``img``; where it reaches past the image, the background colour fills it."""
    w, h = img.size
    left, top, right, bottom = crop.box
    if (left, top, right, bottom) == (0, 0, w, h):
        return img
    if left >= 0 and top >= 0 and right <= w and bottom <= h:
        return img.crop(crop.box)
    canvas = Image.new("RGB", (right - left, bottom - top), tuple(int(v) for v in _border_colour(img)))
    canvas.paste(img, (-left, -top))
    return canvas


def _border_colour(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img)
    edge = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    return np.median(edge, 0)


# --------------------------------------------------------------------------------------------- input gate

GATE_SIDE = 128
NOT_A_SMEAR = "not a blood-smear image"


def smear_gate(img: Image.Image) -> str:
    """Is this a Romanowsky-stained blood image at all? ``""`` when it may be; else the reason it is not, for the
    reviewer. Colour and texture statistics only, before any model: a stained smear has violet stained pixels
    (nuclei) and almost no green or yellow, and is neither pixel noise, a smooth gradient nor mostly one exact
    colour; a photograph, a document, a screenshot, a fluorescence image, random pixels or a blank field fail one of
    these. What passes still goes through each model's own out-of-distribution flag."""
    small = img.convert("RGB").resize((GATE_SIDE, GATE_SIDE), Image.Resampling.BILINEAR)
    arr = np.asarray(small, np.float32)
    if float(arr.std()) < 6:
        return f"{NOT_A_SMEAR}: the image is blank or a flat colour"
    if planar_residual(arr) < GRADIENT_LIMIT:
        return f"{NOT_A_SMEAR}: it is a smooth colour gradient, with no cells on it"
    if single_colour_share(small) > DRAWN_LIMIT:
        return (f"{NOT_A_SMEAR}: most of it is one exact colour (a drawing, a document or a screenshot; a camera "
                "image of a smear has grain)")
    hsv = np.asarray(small.convert("HSV"), np.float32)
    hue, sat = hsv[..., 0] * (360 / 255), hsv[..., 1] / 255
    saturated = sat > 0.15
    green = saturated & (hue > 45) & (hue < 175)
    share = float(green.sum() / saturated.sum()) if saturated.sum() else 0.0
    # a few smears are stained with a greenish tint (5 of 11,167 real images reach 18-39 %); they keep a stained
    # nucleus, which photographs do not: refuse above 12 % only without one, and always above 45 %
    if share > 0.12 and (share >= 0.45 or not locate_cell(img.convert("RGB")).found):
        return (f"{NOT_A_SMEAR}: {share:.0%} of its coloured pixels are green or yellow, which Romanowsky-stained "
                "blood has almost none of (a photograph, a fluorescence image?)")
    # violet: blue well above green, and red above green too; a blue sky or sea has its red below its green (a
    # photograph of a roof against the sky passed the blue-only rule; the real images' lowest share is 0.7 %)
    if float(((arr[..., 2] - arr[..., 1] > 30) & (arr[..., 0] > arr[..., 1])).mean()) < 0.005:
        return f"{NOT_A_SMEAR}: no violet stained pixels (no stained nucleus)"
    if pixel_noise(arr) > NOISE_LIMIT:
        return (f"{NOT_A_SMEAR}: it is mostly pixel-to-pixel noise, without the smooth outlines of cells and "
                "background")
    return ""


# at GATE_SIDE, measured on the 11,167 real images (python -m bench.gate: none refused): planar_residual at least
# 11.2 (smooth synthetic gradients 0.3); single_colour_share at most 0.26 (drawings on a flat page 0.64-0.89)
GRADIENT_LIMIT = 3.0
DRAWN_LIMIT = 0.5


def planar_residual(arr: np.ndarray) -> float:
    """Standard deviation of what a plane (colour = a + b x + c y, per channel) leaves of the image: near zero for a
    smooth gradient, large wherever there are cells against a background."""
    h, w = arr.shape[:2]
    design, pinv = _plane_design(h, w)
    flat = arr.reshape(-1, arr.shape[-1]).astype(np.float64)
    coef = pinv @ flat  # the least-squares plane (the design is fixed per size: its pseudo-inverse is cached)
    return float((flat - design @ coef).std())


@functools.lru_cache(maxsize=8)
def _plane_design(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:h, :w]
    design = np.stack([np.ones(h * w), xx.ravel() / w, yy.ravel() / h], axis=1)
    return design, np.linalg.pinv(design)


def single_colour_share(small: Image.Image) -> float:
    """Share of the pixels that have exactly the image's most common colour, when that colour is not near black (a
    segmented cell's black surround is legitimate): a drawing or a screenshot has large areas of one exact colour."""
    flat = np.asarray(small.convert("RGB")).reshape(-1, 3).astype(np.int32)
    packed = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]  # one integer per colour: a 1-d unique is ~30x
    colours, counts = np.unique(packed, return_counts=True)        # faster than unique over rows
    k = int(counts.argmax())
    top = int(colours[k])
    return 0.0 if max(top >> 16, (top >> 8) & 255, top & 255) < 30 else float(counts[k] / len(flat))


# pixel_noise of the 11,167 real images at GATE_SIDE: at most 0.24 (all4 fields; the leukocyte crops 0.09);
# independent random pixels give ~0.66 (python -m bench.gate)
NOISE_LIMIT = 0.45


def pixel_noise(arr: np.ndarray) -> float:
    """How much of an image's contrast is pixel-to-pixel noise: the mean absolute difference between its grey
    level and the 3x3 mean around each pixel, over the grey level's standard deviation."""
    grey = arr.mean(axis=-1)
    padded = np.pad(grey, 1, mode="edge")
    h, w = grey.shape
    local = sum(padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 9
    return float(np.abs(grey - local).mean() / (grey.std() + 1e-6))
