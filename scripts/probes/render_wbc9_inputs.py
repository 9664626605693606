"""Contact sheet of what a bundle's network is given (located, framed, colour-normalised), one row per folder:
the way to see a framing defect before training on it. It writes renders of dataset images, so it writes outside
the project by default (never commit the sheet).

    python scripts/render_wbc9_inputs.py --bundle models/wbc9-efficientnet_lite0-reinhard \\
        --folder pbc_extra/platelet --folder bccd_wbc/Lymphocyte --set min_side=0.5 --set inside=true

``--set KEY=VALUE`` overrides the card's locating step (to preview a framing before training with it); folders are
relative to the data root. Found it: PBC platelet crops were blown-up blurry blobs, like a low-resolution camera's
leukocytes (configs/wbc9_efficientnet_lite0_reinhard_frame.yaml)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from leukoview.models import transforms
from leukoview.models.bundle import load_bundle
from leukoview.primitives.images import find_images
from leukoview.primitives.settings import data_root


def _value(text: str):
    return {"true": True, "false": False}.get(text.lower(), text if not text.replace(".", "", 1).isdigit()
                                              else float(text))


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--folder", action="append", required=True, help="relative to the data root; repeatable")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the locating step")
    ap.add_argument("--per-row", type=int, default=8)
    ap.add_argument("--out", default="/tmp/leukoview-inputs.png")
    args = ap.parse_args(argv)
    spec = json.loads(json.dumps(load_bundle(args.bundle).card.input))
    for item in args.set:
        key, _, value = item.partition("=")
        spec.setdefault("locate", {"method": "nucleus", "scale": 1.6})[key] = _value(value)
    side, root = 128, data_root()
    sheet = Image.new("RGB", (side * args.per_row, side * len(args.folder)), "white")
    for row, folder in enumerate(args.folder):
        for col, path in enumerate(find_images(root / folder)[:args.per_row]):
            with Image.open(path) as img:
                view = transforms.resize_for_display(img.convert("RGB"), spec)
            sheet.paste(view.resize((side, side)), (col * side, row * side))
    out = Path(args.out)
    sheet.save(out)
    print(f"{out}: rows {', '.join(args.folder)}; locate {spec.get('locate')}")
    return out


if __name__ == "__main__":
    main()
