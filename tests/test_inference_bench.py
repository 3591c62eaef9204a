"""benchmarks/inference.py at a smoke budget (--quick): every runtime line builds, runs, is
compared with the reference, and states the precision that ran; lines that cannot run say why.
No timing is asserted (the numbers of a smoke run mean nothing)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from inference import main  # noqa: E402

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")


def test_quick_resnet20_run_covers_every_runtime(data_root, tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        # the Table 6 weights (shipped in the package): real logit margins, so exact paths agree 100%
        assert main(["--quick", "--only", "resnet20", "--checkpoint", "pretrained:resnet20/cifar10-table6",
                     "--threads", "2", "--data", str(data_root),
                     "--json", str(tmp_path / "inf.json"), "--markdown"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    doc = json.loads((tmp_path / "inf.json").read_text())
    rows = {(r["batch"], r["runtime"]): r for r in doc["results"]}
    assert {b for b, _ in rows} == {1, 16}
    names = {n for _, n in rows}
    for name in ("reslearn eager fp32", "reslearn fast: folded+CL+compile(freezing)", "ONNX Runtime fp32",
                 "OpenVINO f32 (hint f32)", "ONNX Runtime int8 (static QDQ)", "OpenVINO int8 (NNCF, rest f32)"):
        assert name in names, name
    # throughput mode splits a batch across the 2 streams: batch 16 only, and said so at batch 1
    stream = "OpenVINO int8 (NNCF, rest f32), 2 streams"
    assert (16, stream) in rows and (1, stream) not in rows
    assert f"skipped {stream}: a batch of 1 does not split into 2 streams" in out
    ref = rows[(16, "reslearn eager fp32")]
    assert ref["ratio"] == 1.0 and ref["max_abs_diff"] == 0.0
    for r in rows.values():
        assert r["img_s"] > 0 and r["precision"] and 0 <= r["top1_agreement"] <= 100 and r["top1_err"] is not None
        if r["precision"].startswith("fp32"):  # the exact paths agree with the reference
            assert r["max_abs_diff"] < 1e-3 and r["top1_agreement"] == 100.0, r["runtime"]
    assert rows[(16, stream)]["precision"] == rows[(16, "OpenVINO int8 (NNCF, rest f32)")]["precision"]
    assert "| runtime | precision that ran |" in out and "flags" in out
