"""Device strings (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) checked against this machine, so
that a mistyped or absent device is one line naming the valid ones, not a PyTorch traceback."""

from __future__ import annotations

import re

import torch

from ..errors import ReslearnError

__all__ = ["select_device", "available_devices"]

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
