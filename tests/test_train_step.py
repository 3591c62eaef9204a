"""The CPU training step's fast paths (benchmarks/train_step.py) compute what eager fp32 computes.

Stated tolerances, from the same weights and batch (resnet20, random 32x32 batch, SGD lr 0.1):
- fp32 paths (channels_last, torch.compile): the first loss within 1e-5 relative (the same
  forward, other kernels), the first step's whole gradient within 1e-2 relative L2 norm (measured
  3e-3: a batch-16 BN backward sums in another order), the losses of 4 steps within 1e-2.
- bf16 autocast: the first loss within 1e-2 (measured 7e-4), the gradient's cosine similarity
  > 0.95 (measured 0.994; bf16's 8-bit mantissa on random-noise input, whose gradients cancel),
  the losses of 4 steps within 3e-2 (measured 5e-3).
"""

import json
import sys

import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from train_step import Variant, main, run_steps, variants  # noqa: E402


def _grad(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def _compare(v: Variant, *, width: int, batch: int, steps: int = 4):
    (ref_first,), ref_model = run_steps(Variant(), steps=1, width=width, batch=batch)
    (first,), model = run_steps(v, steps=1, width=width, batch=batch)
    g_ref, g = _grad(ref_model), _grad(model)
    ref_losses, _ = run_steps(Variant(), steps=steps, width=width, batch=batch)
    losses, _ = run_steps(v, steps=steps, width=width, batch=batch)
    rel = [abs(a - b) / a for a, b in zip(ref_losses, losses)]
    return abs(first - ref_first) / ref_first, float((g - g_ref).norm() / g_ref.norm()), \
        float(torch.nn.functional.cosine_similarity(g, g_ref, dim=0)), max(rel)


def test_channels_last_matches_eager_fp32():
    first, grad_rel, _, steps_rel = _compare(Variant(channels_last=True), width=8, batch=16)
    assert first < 1e-5 and grad_rel < 1e-2 and steps_rel < 1e-2


@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_autocast_matches_eager_fp32_loosely(channels_last):
    first, _, cos, steps_rel = _compare(Variant(channels_last=channels_last, bf16=True), width=8, batch=16)
    assert first < 1e-2 and cos > 0.95 and steps_rel < 3e-2


def test_compile_matches_eager_fp32():
    """Inductor on the tiniest resnet20 (width 4, batch 8): compiling took 27 s on 1 thread of a
    loaded 2-core CPU (under the 60 s that would make it a slow test)."""
    first, grad_rel, _, steps_rel = _compare(Variant(compile=True), width=4, batch=8, steps=2)
    assert first < 1e-5 and grad_rel < 1e-2 and steps_rel < 1e-2


def test_variants_put_eager_fp32_first():
    vs = variants(bf16=True, compile=True)
    assert vs[0] == Variant() and len(set(vs)) == 8
    assert variants(bf16=False, compile=False) == [Variant(), Variant(channels_last=True)]


def test_quick_run_prints_ratios_and_peak(tmp_path, capsys):
    torch.set_num_threads(1)
    assert main(["--quick", "--threads", "1", "--json", str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "flags:" in out and "peak = the faster of torch.mm" in out and "eager fp32" in out
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["rows"][0]["variant"] == "eager fp32" and doc["rows"][0]["ratio"] == 1.0
    assert all(r["img_s"] > 0 and r["gflop_s"] > 0 for r in doc["rows"]) and doc["peaks"]["fp32"] > 0
    kernels = doc["peak_kernels"]["fp32"]  # the peak is the faster of the two measured kernels
    assert doc["peaks"]["fp32"] == max(kernels["matmul"], kernels["conv3x3"]) > 0
