import io

import numpy as np
import pytest
from PIL import Image

from leukoview.primitives.images import ImageError, load_image


def _png(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA", "P", "I;16", "CMYK"])
def test_modes_become_rgb(mode):
    img = Image.new("RGB", (20, 10), (200, 50, 50)).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    out = load_image(buf.getvalue())
    assert out.mode == "RGB" and out.size == (20, 10)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    assert load_image(buf.getvalue()).size == (20, 40)


def test_sixteen_bit_is_rescaled_not_clipped():
    arr = (np.arange(400).reshape(20, 20) * 100).astype(np.uint16)
    out = np.asarray(load_image(_png(Image.fromarray(arr))))
    assert out.max() == 255 and out.min() == 0


@pytest.mark.parametrize("data,match", [(b"", "empty"), (b"hello, not an image", "not a readable image"),
                                        (b"<html><body>x</body></html>", "not a readable image")])
def test_non_images_get_a_clear_message(data, match):
    with pytest.raises(ImageError, match=match):
        load_image(data, name="x.png")


def test_truncated_png_is_refused():
    data = _png(Image.new("RGB", (64, 64), (1, 2, 3)))
    with pytest.raises(ImageError, match="damaged or truncated|not a readable"):
        load_image(data[: len(data) // 2])


def test_tiny_and_huge_images_are_refused():
    with pytest.raises(ImageError, match="too small"):
        load_image(_png(Image.new("RGB", (2, 2))))
    img = Image.new("1", (8000, 8000))  # 64 MP, small file
    with pytest.raises(ImageError, match="megapixels|decompression"):
        load_image(_png(img))


def test_folder_is_refused(tmp_path):
    (tmp_path / "fake.png").mkdir()
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path / "fake.png")


def test_find_images_one_rule_no_links_no_hidden(tmp_path):
    from leukoview.primitives.images import find_images

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    outside = tmp_path.parent / f"{tmp_path.name}_outside"
    outside.mkdir()
    for p in (tmp_path / "a" / "x.PNG", tmp_path / "a" / "b" / "y.jpg", tmp_path / ".hidden" / "z.png",
              tmp_path / "a" / "._x.png", tmp_path / "a" / "notes.txt", outside / "secret.png"):
        p.write_bytes(b"x")
    (tmp_path / "a" / "link.png").symlink_to(outside / "secret.png")
    (tmp_path / "linked_dir").symlink_to(outside, target_is_directory=True)
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["a/b/y.jpg", "a/x.PNG"]
