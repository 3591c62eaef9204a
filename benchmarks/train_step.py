"""The ResNet-20 training step on the CPU, fast paths side by side in one process.

Variants (each a full SGD step: forward, cross-entropy, backward, momentum update, on one fixed
batch of random 32x32 images; what is timed is the model, not a data pipeline):
- eager fp32 (the reference), channels_last, bf16 autocast, torch.compile (inductor), and
  their combinations. bf16 lines run only where the CPU has native bf16 (avx512_bf16 or
  amx_bf16 in /proc/cpuinfo; elsewhere PyTorch emulates it and it is slower), unless --bf16.
Each line: images/s as the median over repeats (warm-up and compilation excluded; the variants
are timed round robin so that drift on the machine spreads over all of them), the ratio to
eager fp32, and the achieved GFLOP/s of the step: the model's multiply-adds
(reslearn.summary.count_macs, the papers' FLOPs) x 2 FLOPs x 3 for forward plus backward
(the backward costs two forwards: input and weight gradients), beside the measured fp32 (and
bf16) peak: the faster of torch.mm on large square matrices (MKL) and a large 3x3
convolution (oneDNN, the step's own kernels), with the same threads.

``--device cuda`` times the same variants on a GPU (benchmarks/gpu_spell.py does), where
``--compile-mode reduce-overhead`` replays CUDA graphs.

Usage:
    python benchmarks/train_step.py [--batch 128] [--threads 2] [--repeats 7] [--json out.json]
    python benchmarks/train_step.py --quick     # smoke run: tiny width and batch, 2 repeats, no compile
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import has_bf16, machine, measured_peaks, sync  # noqa: E402  (flags, versions, peak)

from reslearn.registry import create_model  # noqa: E402
from reslearn.summary import count_macs  # noqa: E402


@dataclass(frozen=True)
class Variant:
    """One way of running the step."""

    channels_last: bool = False
    bf16: bool = False
    compile: bool = False

    @property
    def name(self) -> str:
        parts = [p for p, on in (("channels_last", self.channels_last), ("bf16", self.bf16),
                                 ("compile", self.compile)) if on]
        return " + ".join(parts) or "eager fp32"


def variants(*, bf16: bool, compile: bool) -> list[Variant]:
    """Eager fp32 first (the reference), then every combination this run allows."""
    out = []
    for c in ([False, True] if compile else [False]):
        for b in ([False, True] if bf16 else [False]):
            for cl in (False, True):
                out.append(Variant(channels_last=cl, bf16=b, compile=c))
    return out


def build_step(variant: Variant, *, width: int, batch: int, seed: int = 0, device: str = "cpu",
               compile_mode: str = "default") -> tuple[Callable[[], float], nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """``(step, model, batch)``: ``step()`` runs one SGD step (lr 0.1, momentum 0.9, weight decay
    1e-4, the paper's) on the fixed batch and returns its loss. Same seed: same weights and batch
    in every variant."""
    torch.manual_seed(seed)
    model = create_model("resnet20", width=width)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    model, x, y = model.to(device), x.to(device), y.to(device)
    if variant.channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    fwd = torch.compile(model, mode=compile_mode) if variant.compile else model  # as train.compile does
    model.train()

    def step() -> float:
        ctx = torch.autocast(x.device.type, dtype=torch.bfloat16) if variant.bf16 else contextlib.nullcontext()
        with ctx:
            loss = F.cross_entropy(fwd(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step, model, (x, y)


def run_steps(variant: Variant, *, steps: int, width: int = 16, batch: int = 128) -> tuple[list[float], nn.Module]:
    """The losses of ``steps`` steps and the model after them (the correctness tests' view)."""
    step, model, _ = build_step(variant, width=width, batch=batch)
    return [step() for _ in range(steps)], model


def time_variants(vs: list[Variant], *, width: int, batch: int, iters: int, warmup: int,
                  repeats: int, device: str = "cpu", compile_mode: str = "default") -> dict[Variant, list[float]]:
    """Images/s of each variant's repeats, timed round robin after ``warmup`` steps each (the
    first call of a compiled step compiles it: part of the warm-up)."""
    steps = {}
    for v in vs:
        step, _, _ = build_step(v, width=width, batch=batch, device=device, compile_mode=compile_mode)
        for _ in range(warmup):
            step()
        steps[v] = step
    rates: dict[Variant, list[float]] = {v: [] for v in vs}
    for _ in range(repeats):
        for v, step in steps.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(iters):
                step()  # returns the loss as a float: one device sync per step, as the engine has
            sync(device)
            rates[v].append(batch * iters / (time.perf_counter() - t0))
    return rates


def report(rates: dict[Variant, list[float]], *, step_flops_per_image: float, peaks: dict[str, float]) -> list[dict[str, Any]]:
    ref = statistics.median(next(iter(rates.values())))
    rows = []
    for v, r in rates.items():
        med = statistics.median(r)
        gflops = med * step_flops_per_image / 1e9
        peak = peaks["bf16" if v.bf16 and "bf16" in peaks else "fp32"]
        rows.append({"variant": v.name, "img_s": round(med, 1), "ratio": round(med / ref, 3),
                     "gflop_s": round(gflops, 1), "of_peak": round(gflops / peak, 3),
                     "min_img_s": round(min(r), 1), "max_img_s": round(max(r), 1)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--width", type=int, default=16, help="resnet20's first-stage width (16: the paper's)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    p.add_argument("--iters", type=int, default=10, help="steps per timed repeat")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--matmul-n", type=int, default=4096)
    p.add_argument("--peak-conv", type=int, nargs=3, default=(256, 28, 32), metavar=("C", "HW", "BATCH"),
                   help="the 3x3 convolution timed for the peak: channels, size, batch")
    p.add_argument("--bf16", action="store_true", help="time bf16 even without native bf16 (emulated: slow)")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--device", default="cpu", help="cpu | cuda (a GPU has bf16; the peak is its matmul)")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode (reduce-overhead: CUDA graphs)")
    p.add_argument("--quick", action="store_true", help="smoke run: width 4, batch 8, 2 repeats of 2, no compile")
    p.add_argument("--json", help="also write the lines and the machine to this file")
    a = p.parse_args(argv)
    if a.quick:
        a.width, a.batch, a.iters, a.warmup, a.repeats, a.matmul_n, a.no_compile = 4, 8, 2, 1, 2, 256, True
        a.peak_conv = (16, 8, 2)
    if a.threads:
        torch.set_num_threads(a.threads)
    info = machine()
    bf16 = has_bf16(info) or a.bf16 or a.device.startswith("cuda")
    if a.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(a.device)
        print(f"gpu: {info['gpu']}")
    print(f"cpu: {info['cpu']}; flags: {' '.join(info['flags']) or '-'}; threads {info['threads']}; "
          f"torch {info['torch']}; python {info['python']}; commit {info['commit']}; load {info['load_avg']}")
    if not bf16:
        print("bf16: skipped (no avx512_bf16 / amx_bf16 on this CPU; --bf16 times it emulated)")
    macs = count_macs(create_model("resnet20", width=a.width), (3, 32, 32))
    step_flops = 2 * macs * 3  # per image: FLOPs = 2 x multiply-adds; forward + backward = 3 forwards
    peaks, kernels = measured_peaks(matmul_n=a.matmul_n, conv=tuple(a.peak_conv), bf16=bf16, repeats=a.repeats,
                                    device=a.device)
    c, hw, b = a.peak_conv
    print(f"resnet20 (width {a.width}): {macs / 1e6:.1f}M multiply-adds per image, step {step_flops / 1e6:.0f} MFLOP "
          f"per image; peak = the faster of torch.mm {a.matmul_n}^2 and a 3x3 conv {c}ch {hw}x{hw} batch {b} "
          "(channels_last, counted as direct): "
          + "; ".join(f"{k} {peaks[k]:.1f} GFLOP/s (mm {v['matmul']:.1f}, conv {v['conv3x3']:.1f})"
                      for k, v in kernels.items()))
    rates = time_variants(variants(bf16=bf16, compile=not a.no_compile), width=a.width, batch=a.batch,
                          iters=a.iters, warmup=a.warmup, repeats=a.repeats, device=a.device,
                          compile_mode=a.compile_mode)
    rows = report(rates, step_flops_per_image=step_flops, peaks=peaks)
    print(f"batch {a.batch}, {a.repeats} repeats of {a.iters} steps (median; min-max):")
    print(f"{'variant':<34}{'img/s':>9}{'x eager':>9}{'GFLOP/s':>9}{'of peak':>9}   range")
    for r in rows:
        print(f"{r['variant']:<34}{r['img_s']:>9.1f}{r['ratio']:>9.2f}{r['gflop_s']:>9.1f}{r['of_peak']:>9.1%}"
              f"   {r['min_img_s']:.0f}-{r['max_img_s']:.0f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": info, "peaks": peaks, "peak_kernels": kernels, "macs": macs, "rows": rows,
                                            "batch": a.batch, "width": a.width}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
