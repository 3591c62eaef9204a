"""benchmarks/pipeline.py: the training pipeline against the torchvision reference, end to end and
data only, for each of its reslearn step variants (a smoke run on real data; no timing asserted)."""

import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.parametrize("step", ["fp32", "channels_last"])
def test_pipeline_prints_both_ratios(data_root, step):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pipeline.py"), "--data", str(data_root),
                        "--iters", "2", "--warmup", "1", "--repeats", "1", "--workers", "0", "--batch", "16",
                        "--ours-step", step], capture_output=True, text=True, timeout=600,
                       env={"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    # the end-to-end line, then the data-only line (which a channels_last batch once broke)
    assert r.stdout.count("ratio reslearn / reference") == 2, r.stdout
    assert f"reslearn step: {step}" in r.stdout
