"""Facts about the machine that both the data layer and the engine need (no torch import)."""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["available_cores", "cpu_flags"]


def available_cores() -> int:
    """The cores this process may run on: its affinity mask (a container's or taskset's share),
    which is also what PyTorch's DataLoader checks ``num_workers`` against."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags (avx2, avx512_bf16, amx_bf16, ...): the first ``flags`` line of
    ``cpuinfo``, the text of /proc/cpuinfo (read when None). Empty where there is none (macOS,
    Windows, an unreadable file): no flag is then claimed."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    m = re.search(r"^flags\s*:(.*)$", cpuinfo, re.M)
    return set(m.group(1).split()) if m else set()
