"""Grad-CAM family behind one function, an overlay helper, a faithfulness read-out and test-time augmentation.

A CAM object hooks into the network and keeps per-call state, so one is created per call inside ``with`` and
never cached on a shared model; the target is validated first (pytorch-grad-cam's ``__exit__`` swallows
``IndexError``).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from .archs import get_arch
from .calibration import softmax
from .predict import Predictor
from .segment import CellCrop, crop_cell
from .transforms import resize_for_display

METHODS = ("Grad-CAM", "Grad-CAM++", "EigenCAM", "XGrad-CAM", "LayerCAM")
# The app shares one cached network between browser sessions; a CAM hooks into it for the length of a call, so
# two calls at once would see each other's activations. One at a time.
_CAM_LOCK = threading.Lock()


def _cam_class(method: str):
    from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM, XGradCAM

    table = {"Grad-CAM": GradCAM, "Grad-CAM++": GradCAMPlusPlus, "EigenCAM": EigenCAM, "XGrad-CAM": XGradCAM,
             "LayerCAM": LayerCAM}
    if method not in table:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {list(table)}")
    return table[method]


def cam_mask(model: torch.nn.Module, layer: str, x: torch.Tensor, target: int, *, method: str = "Grad-CAM",
             n_classes: int | None = None, fast: bool = True) -> np.ndarray:
    """Class-activation map of ``x`` (1xCxHxW, preprocessed) for class index ``target``: HxW float in [0, 1].

    ``fast`` (default) differentiates from the target layer onwards only (:func:`_gradients_from`); ``False`` is
    the plain full backward pass, kept for the benchmark and the equality test."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if n_classes is not None and not 0 <= target < n_classes:
        raise ValueError(f"target class index {target} is outside 0..{n_classes - 1}")
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one preprocessed image of shape 1xCxHxW, got {tuple(x.shape)}")
    cam_cls = _cam_class(method)
    model.eval()
    target_layer = model.get_submodule(layer)
    with _CAM_LOCK, torch.enable_grad(), _gradients_from(model, target_layer if fast else None), \
            cam_cls(model=model, target_layers=[target_layer]) as cam:
        mask = cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(int(target))])[0]
    mask = np.nan_to_num(np.asarray(mask, dtype=np.float32))
    return np.clip(mask, 0.0, 1.0)


@contextmanager
def _gradients_from(model: torch.nn.Module, layer: torch.nn.Module | None):
    """Build the autograd graph only from ``layer``'s output onwards (``None``: do nothing).

    Every CAM of the family needs the gradient of the class score with respect to the target layer's
    activations, never the parameters' gradients nor anything before that layer. With the parameters frozen and
    the layer's output turned into a fresh graph leaf, the forward pass before the layer records nothing and the
    backward pass runs through the classifier head only: same map, a fraction of the work.
    """
    if layer is None:
        yield
        return
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    # `* 1` makes the returned tensor a non-leaf, so in-place activations after the layer stay legal
    handle = layer.register_forward_hook(lambda _m, _i, out: out.detach().requires_grad_(True) * 1)
    try:
        yield
    finally:
        handle.remove()
        for p, flag in flags:
            p.requires_grad_(flag)


def overlay(image: np.ndarray, mask: np.ndarray, *, opacity: float = 0.45) -> np.ndarray:
    """Blend a jet-coloured ``mask`` (HxW in [0, 1]) over ``image`` (HxWx3 uint8 or float in [0, 1]) -> uint8."""
    import matplotlib

    img = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    if img.shape[:2] != mask.shape:
        raise ValueError(f"image {img.shape[:2]} and mask {mask.shape} differ in size")
    heat = matplotlib.colormaps["jet"](mask)[..., :3].astype(np.float32)
    out = (1 - opacity) * img + opacity * heat
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


@dataclass
class Explanation:
    method: str
    target: str
    mask: np.ndarray  # HxW in [0, 1], at the network's input size
    image: np.ndarray  # HxWx3 uint8: the input as the network saw it (located cell, resized)
    faithfulness: dict | None  # None when the caller did not ask for it (the batch page's review panel)
    crop: CellCrop | None = None  # where the cell-locating step cropped the original (None: the whole image)


def mask_on_original(ex: Explanation, size: tuple[int, int]) -> np.ndarray:
    """The map placed back onto the original image of ``size`` (width, height): resized to the crop's box and
    pasted where the crop came from (zero elsewhere); the whole image when the model does not locate a cell."""
    from PIL import Image

    w, h = size
    left, top, right, bottom = ex.crop.box if ex.crop is not None else (0, 0, w, h)
    resized = np.asarray(Image.fromarray(ex.mask.astype(np.float32), mode="F").resize(
        (max(1, right - left), max(1, bottom - top)), Image.Resampling.BILINEAR))
    out = np.zeros((h, w), np.float32)
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(right, w), min(bottom, h)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = resized[y0 - top:y1 - top, x0 - left:x1 - left]
    return np.clip(out, 0.0, 1.0)


def draw_box(image, crop: CellCrop | None, *, colour=(0, 200, 0)):
    """A copy of a PIL image with the crop's box drawn (the image itself when there is no crop)."""
    from PIL import ImageDraw

    if crop is None or not crop.found:
        return image
    out = image.copy()
    width = max(2, round(max(image.size) / 150))
    ImageDraw.Draw(out).rectangle(crop.box, outline=colour, width=width)
    return out


def draw_cells(image, crops: list[CellCrop], suspicion, threshold: float):
    """A copy of a PIL image with every scored cell boxed and numbered (1 = largest): red at or above the
    threshold, green below; the number is the row of the page's per-cell table."""
    from PIL import ImageDraw

    out = image.copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(image.size) / 150))
    for k, (crop, s) in enumerate(zip(crops, suspicion, strict=True), start=1):
        if not crop.found:
            continue
        colour = (220, 30, 30) if s >= threshold else (0, 170, 0)
        draw.rectangle(crop.box, outline=colour, width=width)
        x, y = max(0, crop.box[0]), max(0, crop.box[1])
        draw.rectangle((x, y, x + 9 * len(str(k)) + 4, y + 13), fill=colour)
        draw.text((x + 2, y), str(k), fill=(255, 255, 255))
    return out


@torch.inference_mode()
def _class_prob(predictor: Predictor, x: torch.Tensor, target: int) -> np.ndarray:
    logits, _ = predictor.forward(x)
    return softmax(logits, predictor.temperature)[:, target]


def faithfulness(predictor: Predictor, x: torch.Tensor, mask: np.ndarray, target: int, *, fraction: float = 0.2,
                 n_random: int = 4, seed: int = 0, band: dict | None = None) -> dict:
    """What removing the most highlighted ``fraction`` of pixels (set to the normalised mean, i.e. 0) does to the
    target's probability, against removing random blocks of the same area.

    ``drop`` and ``drop_random_region`` are signed falls in probability (negative: it rose); ``gain`` =
    ``drop - drop_random_region``, in probability points: positive when the map's region matters more to the
    model than a random region does. ``band`` (from ``camstats`` on the model's own test images: the 10th, 25th
    and 50th percentiles of ``gain``) places this map among the model's usual maps; without it the reading
    falls back to "more than random by 0.02"."""
    k = max(1, int(round(fraction * mask.size)))
    top = np.zeros(mask.size, bool)
    top[np.argsort(mask.ravel())[-k:]] = True
    variants = [x.clone()]
    keep = torch.from_numpy(~top.reshape(mask.shape)).to(x.dtype)
    variants.append(x * keep)
    rng = np.random.default_rng(seed)
    h, w = mask.shape
    block = max(1, int(np.sqrt(k)))
    for _ in range(n_random):
        r = np.ones(mask.shape, np.float32)
        y0, x0 = rng.integers(0, max(1, h - block + 1)), rng.integers(0, max(1, w - block + 1))
        r[y0:y0 + block, x0:x0 + block] = 0
        variants.append(x * torch.from_numpy(r))
    probs = _class_prob(predictor, torch.cat(variants), target)
    base, removed, random = float(probs[0]), float(probs[1]), float(np.mean(probs[2:]))
    gain = (base - removed) - (base - random)
    return {"fraction_removed": fraction, "confidence": base, "confidence_without_highlight": removed,
            "drop": base - removed, "drop_random_region": base - random, "gain": gain,
            "reading": faithfulness_reading(gain, band)}


def faithfulness_reading(gain: float, band: dict | None) -> str:
    """Words for a faithfulness gain, against the model's own band when it has one."""
    if not band:
        return ("the highlighted region matters more than a random region of the same size" if gain > 0.02 else
                "removing the highlighted region changes the score no more than removing a random region: "
                "treat this map with caution")
    if gain >= band["p25"]:
        return (f"the highlighted region matters more than a random one, as in this model's usual maps (its median "
                f"gain on its own test images is {band['p50']:+.1%})" if gain > 0 else
                "within this model's usual range on its own test images, but its usual maps are no more "
                "faithful than random regions: treat its maps with caution")
    if gain >= band["p10"]:
        return f"at the low end of this model's usual range (median {band['p50']:+.1%}): read the map with care"
    return ("less faithful than 9 in 10 of this model's maps on its own test images: treat this map with caution")


def faithfulness_sentence(f: dict, target: str) -> str:
    """The faithfulness numbers in words, with the direction of every change said, not signed."""
    def moved(d: float) -> str:
        return f"lowers it by {d:.1%}" if d >= 0 else f"raises it by {-d:.1%}"

    return (f"removing the {f['fraction_removed']:.0%} most highlighted pixels takes the '{target}' probability "
            f"from {f['confidence']:.1%} to {f['confidence_without_highlight']:.1%} ({moved(f['drop'])}); removing "
            f"random regions of the same size {moved(f['drop_random_region'])}. Faithfulness gain "
            f"{f['gain'] * 100:+.1f} points (the map's region against random ones; higher is better).")


def deletion_curve(predictor: Predictor, x: torch.Tensor, mask: np.ndarray, target: int, *,
                   fractions=(0.05, 0.1, 0.2, 0.3, 0.5), seed: int = 0) -> dict:
    """Deletion test (Petsiuk et al. 2018): the target probability as the most highlighted 5..50 % of pixels are
    removed, against removing the same numbers of random pixels; the areas under both curves (mean probability
    over the fractions). A faithful map's curve falls faster: ``auc_random - auc_map`` > 0."""
    order = np.argsort(mask.ravel())[::-1]
    rand = np.random.default_rng(seed).permutation(mask.size)
    variants = []
    for ranking in (order, rand):
        for f in fractions:
            keep = np.ones(mask.size, np.float32)
            keep[ranking[:max(1, int(round(f * mask.size)))]] = 0
            variants.append(x * torch.from_numpy(keep.reshape(mask.shape)))
    probs = _class_prob(predictor, torch.cat(variants), target)
    n = len(fractions)
    return {"fractions": list(fractions), "map": probs[:n].tolist(), "random": probs[n:].tolist(),
            "auc_map": float(np.mean(probs[:n])), "auc_random": float(np.mean(probs[n:])),
            "advantage": float(np.mean(probs[n:]) - np.mean(probs[:n]))}


def explain(predictor: Predictor, image, *, method: str = "Grad-CAM", target: str | None = None,
            fraction: float = 0.2, crop: CellCrop | None = None, with_faithfulness: bool = True) -> Explanation:
    """CAM of a PIL image for ``target`` (class name; default the predicted class) with its faithfulness.
    ``crop``: the cell to explain when the caller already located it (default: :meth:`Predictor.locate`);
    ``with_faithfulness=False`` skips the faithfulness check (one forward of masked copies) for a view without it."""
    if not predictor.explainable:
        raise ValueError(f"{predictor.bundle.id} is a classical model on image features: class-activation maps "
                         "need a network")
    if crop is None:
        crop = predictor.locate(image)  # once: the map, the input shown and the box all come from this crop
    view = image if crop is None else crop_cell(image, crop)
    x = predictor.preprocess([view], located=True)
    if target is None:
        logits, _ = predictor.forward(x)
        target_index = int(logits.argmax(1)[0])
    else:
        if target not in predictor.classes:
            raise ValueError(f"target class {target!r} is not one of {predictor.classes}")
        target_index = predictor.classes.index(target)
    layer = predictor.bundle.card.get("cam_layer")
    if not layer:
        layer = get_arch(predictor.bundle.card["architecture"]).cam_layer
    mask = cam_mask(predictor.model, layer, x, target_index, method=method, n_classes=len(predictor.classes))
    shown = np.asarray(resize_for_display(view, predictor.spec, located=True))
    return Explanation(method=method, target=predictor.classes[target_index], mask=mask, image=shown,
                       faithfulness=faithfulness(predictor, x, mask, target_index, fraction=fraction,
                                                 band=predictor.bundle.json_file("cam_stats.json", {}).get(
                                                     "faithfulness_band")) if with_faithfulness else None,
                       crop=crop)


def tta_suspicion(predictor: Predictor, image) -> np.ndarray:
    """Suspicion score under the 8 flips/rotations of the dihedral group (smears have no orientation)."""
    from PIL import Image

    views = []
    for k in range(4):
        rotated = image.rotate(90 * k, expand=True)
        views += [rotated, rotated.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return predictor.predict_batch(views)["suspicion"]
