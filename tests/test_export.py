import subprocess
import sys

import onnx

from conftest import ROOT


def test_onnx_export_matches_pytorch(tmp_path):
    out = tmp_path / "r20.onnx"
    r = subprocess.run([sys.executable, "-m", "reslearn.cli", "export", "resnet20", "-o", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    onnx.checker.check_model(onnx.load(str(out)))
    diff = float(r.stdout.rsplit("max abs diff", 1)[1])
    assert diff < 1e-4, r.stdout
    assert "input [None, 3, 32, 32]" in r.stdout
