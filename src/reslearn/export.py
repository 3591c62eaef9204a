"""ONNX export of a trained checkpoint or a registered model, through PyTorch's exporter
(``torch.onnx.export(dynamo=True)``), with a dynamic batch axis and a numerical check against
PyTorch with onnxruntime when it is installed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .errors import ReslearnError

__all__ = ["export_onnx"]


def export_onnx(source: str | Path, out: str | Path, *, input_size: tuple[int, int] | None = None,
                check: bool = True) -> dict[str, Any]:
    """Export ``source`` (a ``.safetensors`` checkpoint or a registered model name) to ``out``.

    Returns the input shape used and, with ``check``, the largest absolute difference between
    onnxruntime's and PyTorch's outputs on a random batch of 2."""
    from .registry import create_model, model_info

    p = Path(source)
    if p.suffix == ".safetensors" or p.exists():
        from .checkpoint import load_model

        model, doc = load_model(p)
        chans, hw = doc["in_chans"], tuple(doc["image_size"])
    else:
        info = model_info(str(source))
        if info.task != "classification":
            raise ReslearnError(f"ONNX export covers image classifiers; {source} is a {info.task} model")
        model, chans, hw = create_model(str(source)).eval(), info.input_size[0], tuple(info.input_size[1:])
    if input_size:
        hw = tuple(input_size)
    x = torch.randn(2, chans, *hw)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(model, (x,), str(out), dynamo=True, input_names=["images"], output_names=["logits"],
                      dynamic_shapes=({0: batch},), verbose=False)
    result: dict[str, Any] = {"onnx": str(out), "input": [None, chans, *hw]}
    if check:
        try:
            import onnxruntime as ort
        except ImportError:
            result["max_abs_diff"] = None  # onnxruntime not installed: exported, not checked
            return result
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
        with torch.no_grad():
            want = model(x)
        result["max_abs_diff"] = float((got - want).abs().max())
    return result
