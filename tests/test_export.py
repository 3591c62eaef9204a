"""ONNX export (reslearn.export): the exported graph runs in onnxruntime at batch sizes other than
the export's (the dynamic batch axis) and computes what the PyTorch model computes."""

import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from conftest import ROOT, require_module
from reslearn import create_model
from reslearn.checkpoint import save_tensors
from reslearn.errors import ReslearnError
from reslearn.export import export_onnx

onnx = require_module("onnx")
ort = require_module("onnxruntime")
require_module("onnxscript")  # torch.onnx.export(dynamo=True) needs it


def _checkpoint(path):
    """A resnet20 (width 4) weights file with non-trivial BN statistics, so that eval-mode BN,
    which the exporter folds or keeps, is not the identity."""
    torch.manual_seed(0)
    model = create_model("resnet20", width=4).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.2, 0.2)
    meta = {"kind": "weights", "model": "resnet20", "model_kwargs": {"width": 4}, "in_chans": 3,
            "image_size": [32, 32]}
    save_tensors(path, dict(model.state_dict()), meta)
    return model


def test_onnx_export_runs_in_onnxruntime_at_other_batch_sizes(tmp_path):
    model = _checkpoint(tmp_path / "r20.safetensors")
    out = tmp_path / "r20.onnx"
    r = subprocess.run([sys.executable, "-m", "reslearn.cli", "export", str(tmp_path / "r20.safetensors"),
                        "-o", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    assert "input [None, 3, 32, 32]" in r.stdout
    assert float(r.stdout.rsplit("max abs diff", 1)[1]) < 1e-4, r.stdout  # the exporter's own check, batch 2
    onnx.checker.check_model(onnx.load(str(out)))
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.name == "images" and not isinstance(inp.shape[0], int)  # a named dynamic axis
    for batch in (1, 5):
        x = torch.randn(batch, 3, 32, 32)
        got = torch.from_numpy(sess.run(None, {"images": x.numpy()})[0])
        with torch.no_grad():
            want = model(x)
        assert got.shape == (batch, 10)
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), float((got - want).abs().max())


def test_export_refuses_non_classifiers(tmp_path):
    with pytest.raises(ReslearnError, match="image classifiers; wrbn is a sequence model"):
        export_onnx("wrbn", tmp_path / "x.onnx")
