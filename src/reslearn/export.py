"""Export a trained checkpoint or a registered model for deployment: ONNX (through PyTorch's
``torch.onnx.export(dynamo=True)``, run with ONNX Runtime) or OpenVINO IR (``openvino.convert_model``
of a ``torch.export`` program), fp32 or int8 post-training quantised (ONNX Runtime's static QDQ
quantisation; NNCF for OpenVINO), always with a dynamic batch axis.

Every export writes a sidecar JSON (``model.json`` beside ``model.onnx`` / ``model.xml``) stating
the input preprocessing, the input size and the class names, and is checked before success is
reported: the exported model runs in its runtime on real images (the checkpoint's test split, or
``images``) at a batch size other than the export's, against the PyTorch model.
"""

from __future__ import annotations

import json
import tempfile
from importlib import import_module
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .errors import ReslearnError

__all__ = ["export_model", "export_onnx", "onnx_file", "openvino_model", "quantize_onnx",
           "quantize_openvino", "onnx_runner", "openvino_runner", "require", "FORMATS"]

FORMATS = {".onnx": "onnx", ".xml": "openvino"}
_EXPORT_BATCH = 2  # the example batch traced at export; the check runs other batch sizes
_CHECK_BATCH = 16


def require(module: str, extra: str):
    """Import ``module`` or fail in one line naming the pip extra that installs it."""
    try:
        return import_module(module)
    except ImportError:
        raise ReslearnError(f"this needs {module}, which is not installed: pip install 'reslearn[{extra}]'") from None


# --------------------------------------------------------------------------- building blocks
def onnx_file(model: torch.nn.Module, path: str | Path, example: torch.Tensor) -> Path:
    """Write ``model`` as ONNX with a dynamic batch axis (input ``images``, output ``logits``)."""
    require("onnxscript", "onnx")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(model, (example,), str(path), dynamo=True, input_names=["images"],
                      output_names=["logits"], dynamic_shapes=({0: batch},), verbose=False)
    return path


def openvino_model(model: torch.nn.Module, example: torch.Tensor):
    """``model`` as an in-memory OpenVINO model with input shape ``[?, C, H, W]``."""
    ov = require("openvino", "openvino")
    prog = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    om = ov.convert_model(prog)
    om.reshape({0: ov.PartialShape([-1, *example.shape[1:]])})
    return om


def _batches(x: torch.Tensor, batch: int):
    return [x[i : i + batch] for i in range(0, len(x), batch)]


def quantize_onnx(fp32_path: str | Path, out: str | Path, calibration: torch.Tensor) -> Path:
    """int8 ONNX by ONNX Runtime's static post-training quantisation: QDQ format, int8 weights per
    output channel, uint8 activations (the U8S8 pairing its x86 kernels run with VNNI), MinMax
    ranges from ``calibration`` (float inputs, one image per calibration step)."""
    require("onnxruntime", "onnx")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(_batches(calibration, 1))

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"images": x.numpy()}

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre))  # shape inference + graph clean-up, as advised
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return Path(out)


def quantize_openvino(om, calibration: torch.Tensor):
    """int8 OpenVINO model by NNCF's post-training quantisation (its default: symmetric int8
    weights per channel, activations per tensor, fast bias correction) over ``calibration``."""
    import logging

    # NNCF imports torch's C++-extension helper, which warns about CUDA on every CPU machine.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    nncf = require("nncf", "openvino")
    nncf.set_log_level(logging.ERROR)  # and its progress bars
    data = nncf.Dataset([x.numpy() for x in _batches(calibration, 1)])
    return nncf.quantize(om, data, subset_size=len(calibration))


Runner = Callable[[torch.Tensor], torch.Tensor]


def onnx_runner(path: str | Path, *, threads: int | None = None) -> tuple[Runner, str]:
    """A function from float inputs to logits through ONNX Runtime's CPU provider, and the
    precisions its convolutions run in, read from the graph as ONNX Runtime optimised it
    (``QLinearConv``: int8; ``Conv``/``FusedConv``: fp32)."""
    ort = require("onnxruntime", "onnx")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # not its warning that the optimised graph we read is machine-specific
    if threads:
        so.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as tmp:
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        label = _ort_precisions(so.optimized_model_filepath)
    name = sess.get_inputs()[0].name
    return (lambda x: torch.from_numpy(sess.run(None, {name: x.numpy()})[0])), label


def _ort_precisions(optimized: str) -> str:
    try:
        import onnx
    except ImportError:
        return "unknown (onnx not installed to read the graph)"
    kinds = {"QLinearConv": "int8", "ConvInteger": "int8", "Conv": "fp32", "FusedConv": "fp32", "NhwcFusedConv": "fp32"}
    counts: dict[str, int] = {}
    for node in onnx.load(optimized, load_external_data=False).graph.node:
        if node.op_type in kinds:
            counts[kinds[node.op_type]] = counts.get(kinds[node.op_type], 0) + 1
    return _precision_label(counts)


def _precision_label(counts: dict[str, int]) -> str:
    return " + ".join(f"{k} ({v} convs)" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "no convs"


def openvino_runner(om_or_path, *, precision: str = "f32", threads: int | None = None,
                    batch: int | None = None, streams: int = 1) -> tuple[Runner, str]:
    """A function from float inputs to logits through OpenVINO's CPU plugin with
    ``INFERENCE_PRECISION_HINT=precision`` (stated, because on CPUs with bf16 units the plugin's
    default is bf16), a static ``batch`` when given, and the precisions the compiled model's
    convolutions really run in. ``streams=1``: one stream (``PERFORMANCE_HINT=LATENCY``);
    ``streams=N``: N streams sharing the threads, each call's batch split into N equal parts run
    at once (OpenVINO's throughput mode, as its ``benchmark_app`` runs it), which a small net's
    large batch can use better than one stream's threads synchronising on every layer."""
    ov = require("openvino", "openvino")
    if streams < 1 or (streams > 1 and (not batch or batch % streams)):
        raise ValueError(f"streams={streams} needs a static batch divisible by it; got batch={batch}")
    core = ov.Core()
    om = core.read_model(str(om_or_path)) if isinstance(om_or_path, (str, Path)) else om_or_path.clone()
    if batch:
        om.reshape({0: ov.PartialShape([batch // streams, *om.inputs[0].partial_shape[1:]])})
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision}
    config.update({"PERFORMANCE_HINT": "LATENCY"} if streams == 1 else {"NUM_STREAMS": streams})
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(om, "CPU", config)
    if streams == 1:
        request = compiled.create_infer_request()
        return (lambda x: torch.from_numpy(request.infer({0: x.numpy()})[0].copy())), _ov_precisions(compiled)
    queue = ov.AsyncInferQueue(compiled, streams)

    def run(x: torch.Tensor) -> torch.Tensor:
        out: list[Any] = [None] * streams
        queue.set_callback(lambda req, i: out.__setitem__(i, req.get_output_tensor(0).data.copy()))
        for i, part in enumerate(x.numpy().reshape(streams, -1, *x.shape[1:])):
            queue.start_async({0: part}, i)
        queue.wait_all()
        return torch.from_numpy(np.concatenate(out))

    return run, _ov_precisions(compiled)


def _ov_precisions(compiled) -> str:
    names = {"f32": "fp32", "bf16": "bf16", "u8": "int8", "i8": "int8", "f16": "fp16"}
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" in info and info["layerType"].astype(str) == "Convolution":
            p = info["runtimePrecision"].astype(str)
            p = names.get(p, p)
            counts[p] = counts.get(p, 0) + 1
    return _precision_label(counts)


# --------------------------------------------------------------------------- the export command
def _load_source(source: str | Path):
    from .registry import create_model, model_info

    p = Path(source)
    if p.suffix == ".safetensors" or p.exists():
        from .checkpoint import load_model

        return load_model(p)
    info = model_info(str(source))
    if info.task != "classification":
        raise ReslearnError(f"export covers image classifiers; {source} is a {info.task} model")
    return create_model(str(source)).eval(), {"model": str(source), "in_chans": info.input_size[0],
                                              "image_size": list(info.input_size[1:])}


def _real_images(doc: dict[str, Any], *, split: str, n: int, images: Sequence[str] | None,
                 data_root: str | None):
    """``(inputs, labels or None, description)`` of real images, or ``None`` when there are none:
    ``images`` (files) when given, else the checkpoint's own data set."""
    from .engine import evaluate

    if images:
        return evaluate.image_inputs(doc, list(images)[:n]), None, f"{min(n, len(images))} given images"
    if not doc.get("config") and not doc.get("data"):
        return None
    try:
        x, y, what = evaluate.real_inputs(doc, split=split, n=n, root=data_root)
    except (ReslearnError, FileNotFoundError):
        return None
    return x, y, f"{len(x)} {what} images"


def _preprocessing(doc: dict[str, Any]) -> dict[str, Any]:
    from .engine.evaluate import eval_resize

    h, w = doc["image_size"]
    pre: dict[str, Any] = {"decode": "grayscale" if doc["in_chans"] == 1 else "RGB",
                           "resize_shorter_side": eval_resize(doc), "center_crop": [h, w], "layout": "NCHW"}
    if doc.get("normalizer"):
        norm = doc["normalizer"]
        pre.update(formula="(pixel * scale - mean) / std, pixel in 0..255",
                   scale=norm["scale"]["data"][0] if norm["scale"]["data"] else 1 / 255,
                   mean={"shape": norm["mean"]["shape"], "data": norm["mean"]["data"]},
                   std={"shape": norm["std"]["shape"], "data": norm["std"]["data"]})
    elif doc.get("config"):  # ImageFolder runs: imagenet_eval_transform (He et al.: mean subtraction only)
        from .data.transforms import IMAGENET_MEAN

        pre.update(formula="pixel / 255 - mean, pixel in 0..255", mean={"shape": [3, 1, 1], "data": list(IMAGENET_MEAN)})
    else:
        pre["formula"] = "none known: a registry model without a checkpoint carries no normaliser"
    return pre


def _agreement(got: torch.Tensor, want: torch.Tensor, labels: torch.Tensor | None) -> dict[str, Any]:
    r = {"max_abs_diff": float((got - want).abs().max()), "logit_scale": float(want.abs().max()),
         "top1_agreement": 100 * float((got.argmax(1) == want.argmax(1)).float().mean())}
    if labels is not None:
        r["top1_err_pytorch"] = 100 * float((want.argmax(1) != labels).float().mean())
        r["top1_err_exported"] = 100 * float((got.argmax(1) != labels).float().mean())
    return r


def _check(run: Runner, model, x: torch.Tensor, labels, *, int8: bool, max_drop: float) -> dict[str, Any]:
    """Compare the exported model with PyTorch on ``x`` in batches of ``_CHECK_BATCH``; raise when
    they disagree: fp32 beyond 1e-3 of the logit scale, int8 by more than ``max_drop`` points of
    top-1 error (or of top-1 agreement where there are no labels)."""
    with torch.no_grad():
        want = torch.cat([model(b) for b in _batches(x, _CHECK_BATCH)])
    got = torch.cat([run(b.contiguous()) for b in _batches(x, _CHECK_BATCH)])
    r = _agreement(got, want, labels)
    if not int8:
        ok = r["max_abs_diff"] <= 1e-3 * max(1.0, r["logit_scale"])
        why = f"max abs logit difference {r['max_abs_diff']:.2e} at logit scale {r['logit_scale']:.2g}"
    elif labels is not None:
        drop = r["top1_err_exported"] - r["top1_err_pytorch"]
        ok, why = drop <= max_drop, f"top-1 error {r['top1_err_exported']:.2f}% vs PyTorch's {r['top1_err_pytorch']:.2f}%"
    else:
        ok, why = 100 - r["top1_agreement"] <= max_drop, f"top-1 agreement {r['top1_agreement']:.2f}%"
    if not ok:
        raise ReslearnError(f"the exported model does not match PyTorch: {why} (bound: "
                            f"{'1e-3 of the logit scale' if not int8 else f'{max_drop} points'})")
    return r


def _write(model, doc, out: Path, fmt: str, example: torch.Tensor, calib: torch.Tensor | None):
    """Write the model file(s); returns what runs it and the precision its runtime reports."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        if calib is None:
            onnx_file(model, out, example)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                quantize_onnx(onnx_file(model, Path(tmp) / "fp32.onnx", example), out, calib)
        return onnx_runner(out)
    ov = require("openvino", "openvino")
    om = openvino_model(model, example)
    if calib is not None:
        om = quantize_openvino(om, calib)
    ov.save_model(om, str(out), compress_to_fp16=False)  # save_model's default would halve the weights
    return openvino_runner(out)


def export_model(source: str | Path, out: str | Path, *, fmt: str | None = None, int8: bool = False,
                 calibration: int = 300, check_images: int = 500, max_drop: float = 1.0,
                 images: Sequence[str] | None = None, data_root: str | None = None,
                 input_size: tuple[int, int] | None = None, check: bool = True) -> dict[str, Any]:
    """Export ``source`` (a ``.safetensors`` checkpoint or a registered model name) to ``out``
    (``.onnx`` or ``.xml``; ``fmt`` "onnx" or "openvino" by default from the suffix), fp32 or
    ``int8`` (calibrated on ``calibration`` training images), with the sidecar JSON; with
    ``check``, compared with PyTorch on ``check_images`` real test images (see :func:`_check`)."""
    out = Path(out)
    fmt = fmt or FORMATS.get(out.suffix)
    if fmt not in FORMATS.values() or out.suffix != {"onnx": ".onnx", "openvino": ".xml"}[fmt]:
        raise ReslearnError(f"the output must end in .onnx (--format onnx) or .xml (--format openvino); got {out.name}")
    model, doc = _load_source(source)
    chans, hw = doc["in_chans"], tuple(input_size or doc["image_size"])
    doc = {**doc, "image_size": list(hw)}
    calib = None
    if int8:
        found = _real_images(doc, split="train", n=calibration, images=images, data_root=data_root)
        if found is None:
            raise ReslearnError("int8 needs calibration images: a checkpoint whose data set is found "
                                "(--data DIR) or --images FILES")
        calib = found[0]
    runner, precision = _write(model, doc, out, fmt, torch.randn(_EXPORT_BATCH, chans, *hw), calib)
    result: dict[str, Any] = {"path": str(out), "format": fmt, "precision": precision, "input": [None, chans, *hw]}
    if check:
        found = _real_images(doc, split="test", n=check_images, images=images, data_root=data_root)
        if found is None:
            found = (torch.randn(_CHECK_BATCH + 1, chans, *hw), None, "random inputs (no real images found)")
        x, labels, result["checked_on"] = found
        result.update(_check(runner, model, x, labels, int8=int8, max_drop=max_drop))
    result["sidecar"] = str(_sidecar(out, doc, result))
    return result


def _sidecar(out: Path, doc: dict[str, Any], result: dict[str, Any]) -> Path:
    from . import __version__

    side = out.with_suffix(".json")
    meta = {"model": doc["model"], "model_kwargs": doc.get("model_kwargs", {}), "file": out.name,
            "format": result["format"], "precision": result["precision"],
            "input": {"name": "images", "shape": result["input"], "dtype": "float32"},
            "output": {"name": "logits", "note": "unnormalised class scores; softmax gives probabilities"},
            "classes": doc.get("classes"), "preprocessing": _preprocessing(doc),
            "check": {k: v for k, v in result.items() if k not in ("path", "format", "precision", "input")},
            "reslearn": __version__, "torch": torch.__version__}
    side.write_text(json.dumps(meta, indent=1) + "\n")
    return side


def export_onnx(source: str | Path, out: str | Path, *, input_size: tuple[int, int] | None = None,
                check: bool = True) -> dict[str, Any]:
    """fp32 ONNX export (kept for callers of the first API); see :func:`export_model`."""
    return export_model(source, out, fmt="onnx", input_size=input_size, check=check)

