"""Device strings (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) checked against this machine, so
that a mistyped or absent device is one line naming the valid ones, not a PyTorch traceback; and
the CPU cores a run may use (``data.workers=auto``, ``train.threads=auto``); and the precision a run
trains in (``train.amp=auto``)."""

from __future__ import annotations

import os
import re

import torch

from ..errors import ReslearnError
from ..system import available_cores, cpu_flags

__all__ = ["select_device", "available_devices", "available_cores", "auto_workers", "auto_threads",
           "native_bf16", "resolve_amp"]

# The imagenet recipe's 8 workers: more idle even for 224 crops on a GPU (fb.resnet.torch's
# default is 2..8), and 64x64 JPEGs decode at thousands a second a core.
MAX_AUTO_WORKERS = 8


def auto_workers(value: int | str, *, cores: int | None = None) -> int:
    """``data.workers``: a count as given, or for ``auto`` one worker per core but one (the
    training process keeps a core), at most MAX_AUTO_WORKERS: 1 on 2 cores, 0 (decode in the
    training process) on 1. Never above the cores, so DataLoader's over-subscription warning
    cannot fire."""
    if value != "auto":
        return int(value)
    return max(0, min(MAX_AUTO_WORKERS, (cores or available_cores()) - 1))


def auto_threads(value: int | str, *, workers: int, cores: int | None = None) -> int:
    """``train.threads``: a count as given (0: PyTorch's default), or for ``auto`` the cores the
    data workers leave, at least 1: 1 on 2 cores with 1 worker, 8 on 16 cores with 8."""
    if value != "auto":
        return int(value)
    return max(1, (cores or available_cores()) - workers)


# x86 CPU flags of native bf16 arithmetic: AVX512-BF16 (Cooper Lake, Zen 4+) and AMX (Sapphire
# Rapids+), which oneDNN uses for bf16 convolutions and matmuls. Without them PyTorch emulates
# bf16 in fp32 and converts around every op: slower than fp32 (benchmarks/train_step.py).
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def native_bf16(device: torch.device, *, cpuinfo: str | None = None) -> bool:
    """Whether ``device`` computes in bf16 natively: a CPU with a flag of BF16_CPU_FLAGS
    (``cpuinfo``: /proc/cpuinfo's text, read when None), a CUDA device of compute capability
    8.0+ (Ampere: emulated bf16 does not count), never MPS."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(BF16_CPU_FLAGS & cpu_flags(cpuinfo))
    return False


def resolve_amp(amp: str, device: torch.device, *, cpuinfo: str | None = None) -> str:
    """The precision a run with ``train.amp=amp`` trains in on ``device``: ``auto`` is ``bf16``
    where the device has native bf16 (``native_bf16``), else ``none`` (fp32); others as given."""
    if amp != "auto":
        return amp
    return "bf16" if native_bf16(device, cpuinfo=cpuinfo) else "none"

_FORMS = "auto, cpu, cuda, cuda:N or mps"


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def available_devices() -> list[str]:
    """The devices this machine has, as device strings."""
    found = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)]
    return found + (["mps"] if _mps_available() else [])


def select_device(name: str = "auto", *, key: str = "train.device") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; any other name must exist on this machine.
    ``key`` names the setting in error messages (``train.device``, ``--device``)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    have = ", ".join(available_devices())
    m = re.fullmatch(r"(cpu|cuda|mps)(?::(\d+))?", str(name))
    if m is None or (m[2] is not None and m[1] != "cuda"):
        raise ReslearnError(f"{key}={name!r} is not a device; use {_FORMS} (this machine has: {have})")
    dev = torch.device(name)
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ReslearnError(f"{key}={name} but this machine has no such CUDA device (it has: {have})")
    if dev.type == "mps" and not _mps_available():
        raise ReslearnError(f"{key}=mps but MPS is not available here (this machine has: {have})")
    return dev
