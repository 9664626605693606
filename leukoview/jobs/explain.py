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

from leukoview.jobs.predict import Predictor
from leukoview.models.bundle import CAM_STATS
from leukoview.models.transforms import resize_for_display
from leukoview.primitives.calibration import softmax
from leukoview.primitives.segment import CellCrop, crop_cell

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


@dataclass
class CamInputs:
    """What every method of the CAM family is computed from: the target layer's activations for one image and the
    gradient of the target class's score with respect to them (CxHxW each), and the map's size (the input's)."""
    activations: np.ndarray
    gradients: np.ndarray
    size: tuple[int, int]  # (width, height)
    target: int  # the class index the gradients are of


def cam_inputs(model: torch.nn.Module, layer: str, x: torch.Tensor, target: int | None, *,
               n_classes: int | None = None) -> CamInputs:
    """One forward pass and the backward pass from the target layer onwards (:func:`_gradients_from`) for class
    index ``target`` of ``x`` (1xCxHxW, preprocessed; ``None``: the class this forward pass ranks first). Every
    method's map then follows without the network (:func:`cam_from`): a method change on a page costs
    milliseconds."""
    if target is not None and n_classes is not None and not 0 <= target < n_classes:
        raise ValueError(f"target class index {target} is outside 0..{n_classes - 1}")
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one preprocessed image of shape 1xCxHxW, got {tuple(x.shape)}")
    model.eval()
    captured: dict = {}
    with _CAM_LOCK, torch.enable_grad(), _gradients_from(model, model.get_submodule(layer), captured):
        logits = model(x.clone())
        target = int(logits[0].argmax()) if target is None else int(target)
        logits[0, target].backward()
    leaf = captured["leaf"]
    if leaf.ndim != 4 or leaf.grad is None:
        raise RuntimeError(f"layer {layer!r} gives no spatial map on the path to the class score")
    return CamInputs(activations=leaf.detach()[0].float().numpy().copy(),
                     gradients=leaf.grad[0].float().numpy().copy(), size=(int(x.shape[3]), int(x.shape[2])),
                     target=target)


def _scaled(cam: np.ndarray) -> np.ndarray:
    cam = cam - np.min(cam)
    return cam / (1e-7 + np.max(cam))


def cam_from(inputs: CamInputs, method: str = "Grad-CAM") -> np.ndarray:
    """The map of one method (HxW float in [0, 1], at the input's size) from :func:`cam_inputs`, by the formulas
    pytorch-grad-cam uses (the equality is tested against it): channel weights from the gradients (Grad-CAM: their
    mean; Grad-CAM++: positive gradients weighted by second/third-order terms; XGrad-CAM: gradients times
    normalised activations), LayerCAM's element-wise positive gradients, EigenCAM's first principal component of
    the activations; then ReLU, min-max scaling and bilinear resizing."""
    import cv2

    if method not in METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {list(METHODS)}")
    a, g = inputs.activations, inputs.gradients
    area = a.sum(axis=(1, 2))[:, None, None]
    if method == "EigenCAM":
        flat = np.nan_to_num(a).reshape(a.shape[0], -1).T
        flat = flat - flat.mean(axis=0)
        first = np.linalg.svd(flat, full_matrices=False)[2][0]  # the same first vector as the full SVD, far cheaper
        cam = (flat @ first).reshape(a.shape[1:])
    elif method == "LayerCAM":
        cam = (np.maximum(g, 0) * a).sum(axis=0)
    else:
        if method == "Grad-CAM":
            weights = g.mean(axis=(1, 2))
        elif method == "Grad-CAM++":
            g2 = g ** 2
            aij = np.where(g != 0, g2 / (2 * g2 + area * g2 * g + 1e-6), 0)
            weights = (np.maximum(g, 0) * aij).sum(axis=(1, 2))
        else:  # XGrad-CAM
            weights = (g * a / (area + 1e-7)).sum(axis=(1, 2))
        cam = (weights[:, None, None] * a).sum(axis=0)
    cam = cv2.resize(np.float32(_scaled(np.maximum(cam, 0))), inputs.size)
    mask = _scaled(np.maximum(cam, 0))
    return np.clip(np.nan_to_num(np.asarray(mask, dtype=np.float32)), 0.0, 1.0)


def cam_mask(model: torch.nn.Module, layer: str, x: torch.Tensor, target: int, *, method: str = "Grad-CAM",
             n_classes: int | None = None, fast: bool = True) -> np.ndarray:
    """Class-activation map of ``x`` (1xCxHxW, preprocessed) for class index ``target``: HxW float in [0, 1].

    ``fast`` (default): :func:`cam_inputs` then :func:`cam_from`; ``False``: pytorch-grad-cam's own class with
    the plain full backward pass, the reference kept for the benchmark and the equality test."""
    if not fast:
        return _reference_cam(model, layer, x, target, method=method, n_classes=n_classes)
    if method not in METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {list(METHODS)}")
    return cam_from(cam_inputs(model, layer, x, target, n_classes=n_classes), method)


def _reference_cam(model, layer, x, target, *, method, n_classes):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if n_classes is not None and not 0 <= target < n_classes:
        raise ValueError(f"target class index {target} is outside 0..{n_classes - 1}")
    cam_cls = _cam_class(method)
    model.eval()
    with _CAM_LOCK, torch.enable_grad(), cam_cls(model=model, target_layers=[model.get_submodule(layer)]) as cam:
        mask = cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(int(target))])[0]
    return np.clip(np.nan_to_num(np.asarray(mask, dtype=np.float32)), 0.0, 1.0)


@contextmanager
def _gradients_from(model: torch.nn.Module, layer: torch.nn.Module, captured: dict):
    """Build the autograd graph only from ``layer``'s output onwards; that output (a fresh graph leaf, whose
    ``.grad`` the backward pass fills) is put in ``captured["leaf"]``.

    Every CAM of the family needs the gradient of the class score with respect to the target layer's
    activations, never the parameters' gradients nor anything before that layer. With the parameters frozen and
    the layer's output turned into a fresh graph leaf, the forward pass before the layer records nothing and the
    backward pass runs through the classifier head only: same map, a fraction of the work.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)

    def hook(_m, _i, out):
        captured["leaf"] = out.detach().requires_grad_(True)
        return captured["leaf"] * 1  # a non-leaf, so in-place activations after the layer stay legal

    handle = layer.register_forward_hook(hook)
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


DISPLAY_SIDE = 1024  # the original is shown at most this size: a camera's 4000 px frame would cost the page seconds


def on_original(ex: Explanation, image, *, max_side: int = DISPLAY_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """The original image (scaled down to ``max_side`` when larger) with the located cell's box drawn, and the map
    placed on it (:func:`mask_on_original`): what an overlay on the original blends, computed once per map so that
    an opacity move only blends."""
    from dataclasses import replace

    from PIL import Image

    scale = min(1.0, max_side / max(image.size))
    if scale < 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.BILINEAR)
        if ex.crop is not None:
            ex = replace(ex, crop=replace(ex.crop, box=tuple(round(v * scale) for v in ex.crop.box)))
    return np.asarray(draw_box(image, ex.crop)), mask_on_original(ex, image.size)


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


@dataclass
class Prepared:
    """One image made ready for the CAM family: the located cell, the network's input, the image shown, and the
    target layer's activations and gradients. Every method's map and its faithfulness follow from it
    (:func:`explain_prepared`) without running the network forwards and backwards again."""
    x: torch.Tensor
    crop: CellCrop | None
    shown: np.ndarray
    inputs: CamInputs


def prepare(predictor: Predictor, image, *, target: str | None = None, crop: CellCrop | None = None) -> Prepared:
    """Locate (unless ``crop`` is given: the cell the caller already located), preprocess, and run the forward and
    head-backward pass for ``target`` (class name; default the class the network ranks first for this input)."""
    if not predictor.explainable:
        raise ValueError(f"{predictor.bundle.id} is a classical model on image features: class-activation maps "
                         "need a network")
    if target is not None and target not in predictor.classes:
        raise ValueError(f"target class {target!r} is not one of {predictor.classes}")
    if crop is None:
        crop = predictor.locate(image)  # once: the map, the input shown and the box all come from this crop
    view = image if crop is None else crop_cell(image, crop)
    x = predictor.preprocess([view], located=True)
    layer = predictor.bundle.card.cam_layer
    inputs = cam_inputs(predictor.model, layer, x, None if target is None else predictor.classes.index(target),
                        n_classes=len(predictor.classes))
    return Prepared(x=x, crop=crop, shown=np.asarray(resize_for_display(view, predictor.spec, located=True)),
                    inputs=inputs)


def explain_prepared(predictor: Predictor, prep: Prepared, *, method: str = "Grad-CAM", fraction: float = 0.2,
                     with_faithfulness: bool = True) -> Explanation:
    """The ``method``'s map of a :class:`Prepared` image, with its faithfulness (one forward of masked copies)
    unless ``with_faithfulness=False``."""
    mask = cam_from(prep.inputs, method)
    target = prep.inputs.target
    faith = faithfulness(predictor, prep.x, mask, target, fraction=fraction,
                         band=predictor.bundle.json_file(CAM_STATS, {}).get("faithfulness_band")) \
        if with_faithfulness else None
    return Explanation(method=method, target=predictor.classes[target], mask=mask, image=prep.shown,
                       faithfulness=faith, crop=prep.crop)


def explain(predictor: Predictor, image, *, method: str = "Grad-CAM", target: str | None = None,
            fraction: float = 0.2, crop: CellCrop | None = None, with_faithfulness: bool = True) -> Explanation:
    """CAM of a PIL image for ``target`` (class name; default the predicted class) with its faithfulness.
    ``crop``: the cell to explain when the caller already located it (default: :meth:`Predictor.locate`);
    ``with_faithfulness=False`` skips the faithfulness check (one forward of masked copies) for a view without it."""
    if method not in METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {list(METHODS)}")
    return explain_prepared(predictor, prepare(predictor, image, target=target, crop=crop), method=method,
                            fraction=fraction, with_faithfulness=with_faithfulness)


def tta_suspicion(predictor: Predictor, image) -> np.ndarray:
    """Suspicion score under the 8 flips/rotations of the dihedral group (smears have no orientation)."""
    from PIL import Image

    views = []
    for k in range(4):
        rotated = image.rotate(90 * k, expand=True)
        views += [rotated, rotated.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return predictor.predict_batch(views)["suspicion"]
