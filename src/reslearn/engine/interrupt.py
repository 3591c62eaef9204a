"""Stopping a run cleanly on a signal: Ctrl-C (SIGINT) or SIGTERM (``kill``, a job scheduler's
stop, and what ``torchrun`` sends on to its workers), in one process or in every rank of a
distributed run, at an iteration where the checkpoint resumes bit for bit."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["InterruptFlag", "STOP_SIGNALS"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class InterruptFlag:
    """SIGINT or SIGTERM while training: the first asks the loop to stop at the end of the current
    iteration, where a checkpoint resumes bit for bit (one taken mid-step, between backward and
    the optimizer's update, would not); a second quits at once (KeyboardInterrupt). ``signum`` is
    the signal that asked (0: none yet). Installed only in the main thread, where Python runs
    signal handlers.

    Under ``torchrun`` the launcher catches the signal and sends it on to each worker's process
    group (torch.distributed.elastic's ``SubprocessHandler.close``); every rank holds a flag, and
    ``agreed`` makes them stop at the same iteration. The launcher kills the workers when they
    have not exited within its shutdown timeout (30 s in torch 2.x's elastic agent), so the
    iteration under way and the checkpoint must fit in that."""

    def __init__(self, *, enabled: bool = True, announce: bool = True) -> None:
        self.enabled, self.announce = enabled, announce  # announce: say so on stderr (rank 0)
        self.signum = 0
        self._old: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum != 0

    def __enter__(self) -> InterruptFlag:
        if self.enabled and threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.signum = signum
        if self.announce:
            again = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            print(f"reslearn: {signal.Signals(signum).name}: stopping after this iteration to save a checkpoint "
                  f"({again} again to quit now)", file=sys.stderr, flush=True)

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}

    def agreed(self, *, world: int, device: torch.device) -> int:
        """The signal that stops the run at this iteration (0: none): this process's, or under
        DDP the highest that any rank caught, so that all stop at the same iteration however the
        signal reached them (forwarded by torchrun to each, sent by a scheduler to one). Every
        rank must call it at every iteration: one all-reduce of one integer, on the device the
        process group reduces on (the GPU under nccl, the CPU under gloo)."""
        if world <= 1:
            return self.signum
        box = torch.tensor([self.signum], dtype=torch.int32, device=device)
        dist.all_reduce(box, op=dist.ReduceOp.MAX)
        return int(box.item())
