"""Where an all4 field's batch-scoring time goes with a cell-level bundle, and what int8 quantisation of its network
would give (tried and left out: it changes scores).

    LEUKOVIEW_DATA_ROOT=../shared/data python scripts/probes/probe_all4_speed.py \
        [--bundle models/all4-efficientnet_lite0-cells-fieldhead] [--n 128]

Prints the mean ms per field of each per-image step on one thread (decode, input gate, seen-split
lookup, finding the cells and cutting their crops), the network's ms per field through the bundle's ONNX session,
and for int8 static quantisation (ONNX Runtime QDQ, per-channel weights, calibrated on the cells of 40 other
fields) its speed against fp32 on the same crops, the largest logit difference and how many crops change class.
"""
import argparse
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from leukoview.jobs.predict import Predictor, _decode  # noqa: E402
from leukoview.models.archs import get_arch  # noqa: E402
from leukoview.models.onnx_backend import _WithFeatures  # noqa: E402
from leukoview.models.transforms import cell_arrays, normalise_batch  # noqa: E402
from leukoview.primitives import settings  # noqa: E402
from leukoview.primitives.images import find_images  # noqa: E402
from leukoview.primitives.segment import smear_gate  # noqa: E402


def timed(totals: dict, name: str, fn):
    t = time.perf_counter()
    out = fn()
    totals[name] = totals.get(name, 0.0) + time.perf_counter() - t
    return out


def rate(session, x: np.ndarray, batch: int = 8) -> float:
    session.run(None, {"x": x[:batch]})
    t = time.perf_counter()
    for i in range(0, len(x), batch):
        session.run(None, {"x": x[i:i + batch]})
    return len(x) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=str(settings.models_dir() / "all4-efficientnet_lite0-cells-fieldhead"))
    ap.add_argument("--n", type=int, default=128)
    a = ap.parse_args()
    torch.set_num_threads(2)
    files = find_images(settings.data_root() / "all4")
    random.Random(0).shuffle(files)
    p = Predictor(a.bundle, backend="onnx")
    totals: dict = {}
    stacks = []
    for f in files[:a.n]:
        img, _ = timed(totals, "decode", lambda f=f: _decode(f))
        timed(totals, "input gate", lambda img=img: smear_gate(img))
        timed(totals, "seen-split lookup", lambda f=f, img=img: p.seen_split(f, img))
        stacks.append(timed(totals, "find cells + cut crops", lambda img=img: cell_arrays(img, p.spec)[1]))
    cells = normalise_batch([c for s in stacks for c in s], p.spec)
    t = time.perf_counter()
    p.onnx.run(cells[:8])
    for i in range(0, len(cells), p.micro_batch):
        p.onnx.run(cells[i:i + p.micro_batch])
    totals["network (ONNX fp32)"] = time.perf_counter() - t
    print(f"{a.n} all4 fields, {len(cells) / a.n:.1f} cells per field; ms per field:")
    for name, seconds in totals.items():
        print(f"  {name:24s} {seconds / a.n * 1000:6.2f}")

    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calib = normalise_batch([c for f in files[a.n:a.n + 40] for c in cell_arrays(_decode(f)[0], p.spec)[1]], p.spec)
    folder = Path(tempfile.mkdtemp())
    size = int(p.spec["size"])
    classifier = p.bundle.card.classifier or get_arch(p.bundle.card.architecture).classifier
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_WithFeatures(p.model, classifier).eval(), torch.zeros(1, 3, size, size),
                          folder / "fp32.onnx", input_names=["x"], output_names=["logits", "features"],
                          opset_version=17, dynamo=False, dynamic_axes={"x": {0: "n"}})
        quant_pre_process(str(folder / "fp32.onnx"), str(folder / "pre.onnx"))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": calib[i:i + 8]} for i in range(0, len(calib), 8)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(folder / "pre.onnx"), str(folder / "int8.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    fp32 = ort.InferenceSession(str(folder / "pre.onnx"), options)
    int8 = ort.InferenceSession(str(folder / "int8.onnx"), options)
    l32, l8 = fp32.run(None, {"x": cells})[0], int8.run(None, {"x": cells})[0]
    print(f"int8 vs fp32 on the same {len(cells)} crops: {rate(int8, cells):.0f} vs {rate(fp32, cells):.0f} crops/s; "
          f"largest logit difference {np.abs(l32 - l8).max():.2f}; class changed on "
          f"{int((l32.argmax(1) != l8.argmax(1)).sum())} crops")


if __name__ == "__main__":
    main()
