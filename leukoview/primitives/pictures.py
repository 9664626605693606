"""Generated pictures that are not blood smears, for the out-of-distribution audits and the wrong-task detector:
:func:`not_cells` (crops of scikit-learn's sample photographs, coloured noise, gradients and flat colours, drawn
shapes with text; the input gate's rules were set while looking at these) and :func:`held_out_non_cells` (kinds
the gate's rules were not set on: crops of matplotlib's sample images and charts drawn with it). Seeded.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def not_cells(n: int = 200, *, size: int = 224, seed: int = 0) -> dict[str, list[Image.Image]]:
    """Four families of generated non-cell images, ``n // 4`` each."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    k = n // 4
    photos = load_sample_images().images
    crops = []
    for i in range(k):
        ph = photos[i % len(photos)]
        side = int(rng.integers(size // 2, min(ph.shape[:2])))
        y, x = rng.integers(0, ph.shape[0] - side), rng.integers(0, ph.shape[1] - side)
        crops.append(Image.fromarray(ph[y:y + side, x:x + side]).resize((size, size)))
    noise = [Image.fromarray(np.clip(rng.normal(rng.uniform(40, 220, 3), rng.uniform(10, 80), (size, size, 3)), 0,
                                     255).astype(np.uint8)) for _ in range(k)]
    smooth = []
    yy, xx = np.mgrid[:size, :size] / size
    for _ in range(k):
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))[..., None]
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        smooth.append(Image.fromarray((a * (1 - t) + b * t).astype(np.uint8)))
    drawn = []
    for i in range(k):
        img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.uniform(150, 255, 3)))
        d = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(3, 12))):
            box = sorted(rng.integers(0, size, 2)), sorted(rng.integers(0, size, 2))
            d.rectangle([box[0][0], box[1][0], box[0][1], box[1][1]], outline=tuple(rng.integers(0, 255, 3)),
                        width=int(rng.integers(1, 6)))
        d.text((10, size // 2), f"REPORT {i:03d} — not a cell", fill=(0, 0, 0))
        drawn.append(img)
    return {"photographs (crops)": crops, "coloured noise": noise, "gradients and flat colours": smooth,
            "drawn shapes and text": drawn}


def held_out_non_cells(n: int, *, size: int = 224, seed: int = 7) -> dict[str, list[Image.Image]]:
    """Non-smear images of kinds the gate's rules were not designed on: random crops of matplotlib's sample images
    (a portrait, a product photo, a logo) and charts drawn with matplotlib, each ``n``: the far-OOD sets that test
    whether the input gate's rules, set while looking at :func:`not_cells`, hold on other kinds of picture."""
    import io

    import matplotlib
    from matplotlib import cbook

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    photos = [Image.open(cbook.get_sample_data(f)).convert("RGB")
              for f in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")]
    crops = []
    for i in range(n):
        ph = photos[i % len(photos)]
        side = int(rng.integers(min(ph.size) // 3, min(ph.size)))
        x, y = int(rng.integers(0, ph.width - side + 1)), int(rng.integers(0, ph.height - side + 1))
        crops.append(ph.crop((x, y, x + side, y + side)).resize((size, size)))
    charts = []
    for _ in range(n):
        fig, ax = plt.subplots(figsize=(3, 3), dpi=75)
        kind = int(rng.integers(3))
        data = rng.normal(size=(30, 2)).cumsum(0)
        if kind == 0:
            ax.plot(data, color=tuple(rng.uniform(0, 1, 3)))
        elif kind == 1:
            ax.bar(range(8), rng.uniform(1, 5, 8), color=tuple(rng.uniform(0, 1, 3)))
        else:
            ax.imshow(rng.normal(size=(16, 16)).cumsum(0), cmap=str(rng.choice(["viridis", "plasma", "magma"])))
        ax.set_title("Figure")
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        charts.append(Image.open(buf).convert("RGB").resize((size, size)))
    return {"matplotlib sample photos (crops)": crops, "matplotlib charts": charts}
