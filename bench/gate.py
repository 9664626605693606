"""The input gate on real and generated images: how many real smear images it refuses (should be none) and how
many non-smear images it refuses before any model sees them.

    python -m bench.gate [--generated 400]
"""
import argparse

from leukoview.primitives import settings
from leukoview.primitives.images import find_images, load_image
from leukoview.primitives.pictures import held_out_non_cells, not_cells
from leukoview.primitives.segment import smear_gate

SETS = ("all4", "wbc5", "pbc_extra", "bccd_wbc", "cnmc_sample")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generated", type=int, default=400)
    a = ap.parse_args()
    print("| image set | images | refused by the gate |")
    print("|---|---|---|")
    for name in SETS:
        files = find_images(settings.data_root() / name)
        refused = [f for f in files if smear_gate(load_image(f))]
        print(f"| {name} (real) | {len(files)} | {len(refused)} |")
    for name, images in not_cells(a.generated, seed=0).items():
        print(f"| {name} (generated) | {len(images)} | {sum(bool(smear_gate(im)) for im in images)} |")
    for name, images in held_out_non_cells(a.generated // 4).items():
        print(f"| {name} (held out: not looked at when the gate's rules were set) | {len(images)} | "
              f"{sum(bool(smear_gate(im)) for im in images)} |")


if __name__ == "__main__":
    main()
