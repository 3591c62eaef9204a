"""Facts about the machine that both the data layer and the engine need (no torch import)."""

from __future__ import annotations

import os

__all__ = ["available_cores"]


def available_cores() -> int:
    """The cores this process may run on: its affinity mask (a container's or taskset's share),
    which is also what PyTorch's DataLoader checks ``num_workers`` against."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
