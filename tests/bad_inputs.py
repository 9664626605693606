"""A corpus of bad and odd inputs, generated (nothing downloaded): name -> (file name, bytes, expectation).

Expectation "ok": a usable image that must be accepted and converted to RGB (and then scored, or refused by the
input gate when it shows no stained cell: grey, black, white, a flat strip); otherwise a regex the error message
must match.
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _cell(size=(64, 64)) -> Image.Image:
    """A smear-like image (pale pink background with grain, one violet cell), so that once decoded it passes the
    input gate and reaches the model."""
    rng = np.random.default_rng(0)
    arr = (np.asarray((225, 190, 200), np.float32) + rng.normal(0, 12, (size[1], size[0], 3))).clip(0, 255)
    arr = arr.astype(np.uint8)
    arr[size[1] // 4: 3 * size[1] // 4, size[0] // 4: 3 * size[0] // 4] = (120, 60, 160)
    return Image.fromarray(arr)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but carries one tiny IDAT (decompression-bomb shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def corpus() -> dict[str, tuple[str, bytes, str]]:
    cell = _cell()
    jpeg = _save(cell, "JPEG")
    png = _save(cell, "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6
    anim = io.BytesIO()
    frames = [Image.new("P", (32, 32), k) for k in (10, 200)]
    frames[0].save(anim, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    nan = np.full((32, 32), np.nan, np.float32)
    nan[8:24, 8:24] = 1.0
    return {
        "zero_byte": ("empty.png", b"", "empty"),
        "truncated_jpeg": ("cut.jpg", jpeg[: len(jpeg) // 2], "damaged or truncated|not a readable"),
        "truncated_png": ("cut.png", png[: len(png) // 2], "damaged or truncated|not a readable"),
        "text_as_png": ("notes.png", b"just some text, renamed", "not a readable image"),
        "html": ("page.png", b"<!doctype html><html><body>hi</body></html>", "not a readable image"),
        "pdf": ("doc.png", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", "not a readable image"),
        "png16": ("deep.png", _save(Image.fromarray((np.arange(4096).reshape(64, 64) * 16).astype(np.uint16)),
                                    "PNG"), "ok"),
        "tiff16": ("deep.tif", _save(Image.fromarray((np.arange(4096).reshape(64, 64) * 16).astype(np.uint16)),
                                     "TIFF"), "ok"),
        "cmyk_jpeg": ("cmyk.jpg", _save(cell.convert("CMYK"), "JPEG"), "ok"),
        "rgba_png": ("rgba.png", _save(cell.convert("RGBA"), "PNG"), "ok"),
        "la_png": ("la.png", _save(cell.convert("LA"), "PNG"), "ok"),
        "palette_gif": ("pal.gif", _save(cell.convert("P"), "GIF"), "ok"),
        "animated_gif": ("anim.gif", anim.getvalue(), "ok"),
        "one_pixel": ("one.png", _save(Image.new("RGB", (1, 1)), "PNG"), "too small"),
        "two_pixels": ("two.png", _save(Image.new("RGB", (2, 2)), "PNG"), "too small"),
        "wide_strip": ("strip.png", _save(Image.new("RGB", (4000, 8), (200, 100, 100)), "PNG"), "ok"),
        "bomb_30000": ("bomb.png", _png_header_only(30000, 30000), "megapixels|decompression|too large"),
        "exif_rotated": ("rot.jpg", _save(_cell((80, 40)), "JPEG", exif=exif), "ok"),
        "grayscale": ("gray.png", _save(cell.convert("L"), "PNG"), "ok"),
        "all_black": ("black.png", _save(Image.new("RGB", (64, 64)), "PNG"), "ok"),
        "all_white": ("white.png", _save(Image.new("RGB", (64, 64), (255, 255, 255)), "PNG"), "ok"),
        "float_nan_tiff": ("nan.tif", _save(Image.fromarray(nan, "F"), "TIFF"), "ok"),
        "unicode_name": ("ünïcode cell ☃.png", png, "ok"),
        "bmp": ("cell.bmp", _save(cell, "BMP"), "ok"),
        "webp": ("cell.webp", _save(cell, "WEBP"), "ok"),
        "jpeg_named_png": ("actually_jpeg.png", jpeg, "ok"),
    }
