"""What every benchmark prints beside its numbers: the machine (CPU model and flags, threads,
library versions, commit, load average) and its measured peak rate, the faster of a large
``torch.mm`` and a large 3x3 convolution, so that a throughput can be stated as a share of what
this machine itself reached in the same run."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from reslearn.engine.trainer import git_commit
from reslearn.results import short_commit
from reslearn.system import cpu_flags

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def machine() -> dict[str, Any]:
    """The CPU model and the FLAGS it has, threads, Python/torch/runtime versions, the commit
    (``-dirty`` when code changed) and the load average before the run."""
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpu": platform.processor(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "load_avg": os.getloadavg()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        field = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()[:30])}
        info["cpu"] = field.get("model name", info["cpu"])
        # "AMD EPYC" alone does not say which generation: family 25 is Zen 3/4, 26 Zen 5
        info["cpu_family_model"] = f"{field.get('cpu family', '?')}/{field.get('model', '?')}"
    except OSError:
        text = ""
    info["flags"] = [f for f in FLAGS if f in cpu_flags(text)]
    for mod in ("torchvision", "onnxruntime", "openvino", "nncf", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    # the engine's own record of a run's commit (changes under docs/results/ are data, not code)
    info["commit"] = short_commit(git_commit(ROOT))
    return info


def has_bf16(info: dict[str, Any]) -> bool:
    """Whether the CPU of ``machine()`` has native bf16 arithmetic (AVX-512-BF16 or AMX)."""
    return bool({"avx512_bf16", "amx_bf16"} & set(info["flags"]))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_gflops(n: int, dtype: torch.dtype, repeats: int, device: str = "cpu") -> float:
    """Measured GFLOP/s of torch.mm on n x n matrices (2 n^3 FLOPs), median over repeats."""
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    torch.mm(a, b)  # warm-up
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def conv_gflops(channels: int, hw: int, batch: int, dtype: torch.dtype, repeats: int, device: str = "cpu") -> float:
    """Measured GFLOP/s of one 3x3 convolution (channels -> channels, hw x hw, stride 1,
    channels_last, forward) counted as a direct convolution (2 x 9 x C^2 x H x W FLOPs an image).

    On the CPU this is oneDNN's kernel, the one the training step's convolutions run, while
    ``torch.mm`` is MKL's sgemm, which on this project's AMD CPU reached less than the ResNet-20
    step itself (218 against 271 GFLOP/s): a "share of peak" needs the faster of the two."""
    x = torch.randn(batch, channels, hw, hw, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, channels, 3, 3, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        F.conv2d(x, w, padding=1)  # warm-up (and oneDNN's primitive creation)
        times = []
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            F.conv2d(x, w, padding=1)
            sync(device)
            times.append(time.perf_counter() - t0)
    return 2 * 9 * channels**2 * hw * hw * batch / statistics.median(times) / 1e9


def measured_peaks(*, matmul_n: int, conv: tuple[int, int, int], bf16: bool, repeats: int,
                   device: str) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Per precision, the faster of the square ``torch.mm`` and the 3x3 convolution (``conv`` =
    channels, size, batch), and both measurements."""
    dtypes = {"fp32": torch.float32, **({"bf16": torch.bfloat16} if bf16 else {})}
    kernels = {k: {"matmul": matmul_gflops(matmul_n, dt, repeats, device),
                   "conv3x3": conv_gflops(*conv, dt, repeats, device)} for k, dt in dtypes.items()}
    return {k: max(v.values()) for k, v in kernels.items()}, kernels
