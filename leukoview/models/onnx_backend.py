"""ONNX Runtime inference for a bundle's network: the same logits and penultimate features as PyTorch eager,
about 3x faster on a 2-core CPU (`python -m bench.micro_batch --backend onnx`).

The graph is exported in memory from the verified weights each time a predictor is built (a few seconds), so no
derived model file sits on disk where it could drift from the checked bundle.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from torch import nn


class _WithFeatures(nn.Module):
    """Wraps a classifier network to also return the classifier's input (the penultimate features)."""

    def __init__(self, model: nn.Module, classifier: str):
        super().__init__()
        self.model = model
        self.classifier = model.get_submodule(classifier)

    def forward(self, x):
        captured = {}
        hook = self.classifier.register_forward_pre_hook(lambda _m, inputs: captured.__setitem__("f", inputs[0]))
        try:
            logits = self.model(x)
        finally:
            hook.remove()
        return logits, captured["f"].flatten(1)


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxRunner:
    """``run(x) -> (logits, features)`` for a float32 NCHW numpy batch."""

    def __init__(self, model: nn.Module, classifier: str, size: int, *, threads: int | None = None):
        import onnxruntime as ort

        buf = io.BytesIO()
        wrapper = _WithFeatures(model, classifier).eval()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, torch.zeros(1, 3, size, size), buf, input_names=["x"],
                              output_names=["logits", "features"], opset_version=17, dynamo=False,
                              dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}, "features": {0: "n"}})
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # no busy-waiting between calls: the threads that decode images (and Streamlit) get the cores instead
        # of ORT's pool spinning on them (`python -m bench.micro_batch --backend onnx`: ~125 -> ~140 images/s)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, feats = self.session.run(None, {"x": np.ascontiguousarray(x, dtype=np.float32)})
        return logits, feats
