"""Safe image decoding: one function turns a file, bytes or upload into an RGB PIL image, or raises
:class:`ImageError` with a message a reviewer can act on."""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

UPLOAD_TYPES = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "gif", "webp"]  # file types the pages accept
IMAGE_SUFFIXES = tuple(f".{t}" for t in UPLOAD_TYPES)
MAX_PIXELS = 40_000_000  # a 6000x6000 field of view is fine; decompression bombs are not
MAX_BYTES = 200 * 1024 * 1024
MIN_SIDE = 8
ACCEPTED = "PNG, JPEG, BMP, TIFF, GIF or WebP"


def digest(source) -> str:
    """sha256 of an image source (path or bytes): a key for caching what was computed from it."""
    import hashlib

    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    return hashlib.sha256(data).hexdigest()


def has_image_suffix(name: str | Path) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def find_images(folder: Path | str) -> list[Path]:
    """Image files under ``folder``, recursively, sorted: the one discovery rule of datasets, ``score`` and the
    batch page. Symbolic links (to files or folders) are not followed, so nothing outside the folder is read, and
    hidden entries (names starting with a dot: ``.ipynb_checkpoints``, macOS ``._`` files) are skipped."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            p = Path(dirpath) / f
            if not f.startswith(".") and has_image_suffix(f) and not p.is_symlink() and p.is_file():
                out.append(p)
    return sorted(out)


class ImageError(ValueError):
    """An input that cannot be used as an image; ``str(err)`` is the user-facing reason."""


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        finite = arr[np.isfinite(arr)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        arr = np.nan_to_num((arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr))
        img = Image.fromarray(arr.clip(0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


def load_image(source, *, name: str = "") -> Image.Image:
    """Decode ``source`` (path, bytes, or a binary file object) to an RGB image, upright per its EXIF tag.

    Animated images give their first frame. Raises :class:`ImageError` for anything unusable.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else "upload")
    try:
        if isinstance(source, (str, Path)):
            path = Path(source)
            if path.is_dir():
                raise ImageError(f"{label}: is a folder, not an image file")
            size = path.stat().st_size
            data = path.read_bytes() if size <= MAX_BYTES else None
        else:
            data = source if isinstance(source, (bytes, bytearray)) else source.read()
            size = len(data)
        if data is None or size > MAX_BYTES:
            raise ImageError(f"{label}: file is {size / 2**20:.0f} MB, above the {MAX_BYTES // 2**20} MB limit")
        if size == 0:
            raise ImageError(f"{label}: the file is empty (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > MAX_PIXELS:
                raise ImageError(f"{label}: {img.width}x{img.height} pixels is above the limit of "
                                 f"{MAX_PIXELS / 1e6:.0f} megapixels (a very large or malicious image)")
            img.seek(0)
            img.load()
        img = ImageOps.exif_transpose(img) or img
        if min(img.size) < MIN_SIDE:
            raise ImageError(f"{label}: {img.width}x{img.height} pixels is too small to show a cell "
                             f"(at least {MIN_SIDE}x{MIN_SIDE} needed)")
        return _to_rgb(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not a readable image (expected {ACCEPTED})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{label}: image is too large to decode safely (decompression bomb guard)") from None
    except OSError as e:
        raise ImageError(f"{label}: the image is damaged or truncated ({e})") from None
    except (ValueError, SyntaxError, MemoryError) as e:
        raise ImageError(f"{label}: could not decode the image ({type(e).__name__}: {e})") from None
