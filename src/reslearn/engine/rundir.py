"""One run per run folder: an exclusive lock while a process trains in it, a check that a resumed or
reused folder holds a run of the same configuration, and what a folder already holds.

The lock is ``fcntl.flock`` on ``RUN_DIR/run.lock`` (the file holds the holder's pid and host). The
kernel drops a flock when its process ends, however it ends (SIGKILL included), so a lock left by
a killed run is never stale: the next process simply gets it. No pid probing, no lock breaking.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any, Collection, Iterator

from ..checkpoint import find_latest_checkpoint
from ..config import Config, config_to_dict, yaml_load
from ..errors import ReslearnError, RunFolderBusy

__all__ = ["LOCK_NAME", "lock_run_dir", "check_same_run", "check_precision", "check_run_dir", "holds_run",
           "clear_run"]

LOCK_NAME = "run.lock"

# Settings that change where data lives or how a run is shown, not what it trains: a finished or
# half-finished run may differ in these and still be reused.
_NEUTRAL = {"data.root", "data.workers", "data.download", "data.on_bad_file", "train.device", "train.progress",
            "train.tensorboard", "train.threads", "train.out_dir", "train.run_name", "train.keep_last", "recipe"}

# What a run writes into its folder (``--overwrite`` removes these and nothing else).
RUN_FILES = ("config.yaml", "run.json", "metrics.csv", "final.json", "model.safetensors", "best.safetensors",
             "curves.png", "checkpoints", "tensorboard")


@contextlib.contextmanager
def lock_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s exclusive lock for the ``with`` block; raise ``RunFolderBusy`` naming
    the holder (its pid and host) when another process holds it."""
    import fcntl  # POSIX (Linux, macOS)

    path = Path(run_dir) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "another process"
            raise RunFolderBusy(f"{run_dir} is in use: {holder} is training in it (lock {path}); wait for it "
                                f"to end or use another --run-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # the file stays (unlinking it races with a process opening it)
    finally:
        os.close(fd)  # closing releases the lock


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "kwargs" and k != "options":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_same_run(cfg: Config, run_dir: Path, *, allow: Collection[str] = (),
                   hint: str = "use another --out folder (or delete that run)") -> None:
    """Refuse to reuse ``run_dir`` (skip it as finished, or resume it) when it was trained with a
    different configuration: an experiment re-run with a new budget in the same folder must not
    silently report the old runs, nor a resumed run mix two configurations. Keys in ``allow`` may
    differ too (``train --resume`` may lengthen ``schedule.iterations``); ``hint`` ends the line."""
    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        return
    old = _flat(yaml_load(saved.read_text()) or {})
    new = _flat(config_to_dict(cfg))
    # A key reslearn gained after the run was trained is not in its config.yaml: the run had the
    # key's default, so asking for the default again is the same run (not for a removed key).
    defaults = _flat(config_to_dict(Config()))
    for key in sorted(set(old) | set(new)):
        was = old[key] if key in old else defaults.get(key)
        if key not in _NEUTRAL and key not in allow and was != new.get(key):
            raise ReslearnError(f"{run_dir} holds a run with {key}={was!r}, this one asks for "
                                f"{new.get(key)!r}; {hint}")


def _iteration(checkpoint: Path) -> int:
    return int(checkpoint.stem.split("-")[1])  # checkpoints are named iter-<iteration>.safetensors


def check_precision(run_dir: Path, amp: str) -> None:
    """Refuse to resume ``run_dir`` in precision ``amp`` (``none``, ``bf16``, ``fp16``: what
    ``train.amp`` resolved to here) when its run.json records another: ``train.amp=auto`` resolves
    per machine, and one run must not mix precisions. A run.json without the record (written
    before reslearn kept it) ran its config's ``train.amp``, which ``check_same_run`` compares."""
    try:
        run = json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return
    ran = run.get("amp") if isinstance(run, dict) else None
    if ran is not None and ran != amp:
        raise ReslearnError(f"{run_dir} trained in precision {ran!r} (its run.json), but train.amp resolves to "
                            f"{amp!r} on this device; a run must not mix precisions: resume it on a device like "
                            f"the one it ran on, or train it afresh in another --run-dir")


def check_run_dir(cfg: Config, run_dir: Path, *, resume: bool, overwrite: bool,
                  amp: str | None = None) -> Path | None:
    """Whether ``cfg`` may train in ``run_dir`` (read-only: cheap enough to ask before any data is
    read, and again under the folder's lock). Returns the checkpoint to resume from, if resuming.

    ``resume`` needs a checkpoint, the run's config (only ``schedule.iterations`` may grow), its
    precision where ``amp`` gives the one this device resolves (``check_precision``) and
    iterations still to do; a fresh start in a folder that holds a run needs ``overwrite``."""
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise ReslearnError("--resume continues the folder's run and --overwrite replaces it; give one")
    if run_dir.exists() and not run_dir.is_dir():
        raise ReslearnError(f"run folder {run_dir} is a file, not a folder")
    if not resume:
        held = holds_run(run_dir)
        if held and not overwrite:
            raise ReslearnError(f"{run_dir} already holds {held}; use --resume to continue it, --overwrite to "
                                f"replace it, or another --run-dir (train.run_name)")
        return None
    ck = find_latest_checkpoint(run_dir)
    if ck is None:
        raise ReslearnError(f"--resume: no checkpoint in {run_dir / 'checkpoints'}")
    check_same_run(cfg, run_dir, allow={"schedule.iterations"},
                   hint="resume with the run's own settings (its config.yaml), or train in another --run-dir")
    if amp is not None:
        check_precision(run_dir, amp)
    done, total = _iteration(ck), cfg.schedule.iterations
    if done > total:
        raise ReslearnError(f"schedule.iterations={total} is fewer than the {done} iterations {run_dir} has "
                            f"done; resume with schedule.iterations >= {done}")
    if done == total and (run_dir / "final.json").is_file():
        raise ReslearnError(f"{run_dir} has finished its {total} iterations; nothing to resume "
                            f"(raise schedule.iterations to train it longer)")
    return ck


def holds_run(run_dir: Path) -> str | None:
    """What run ``run_dir`` holds, in words ("a run (finished)", "a run (checkpoint at iteration
    N)"), or None when it holds none (an empty folder, or a run stopped before its first checkpoint)."""
    run_dir = Path(run_dir)
    if (run_dir / "final.json").is_file() or (run_dir / "model.safetensors").is_file():
        return "a run (finished)"
    last = find_latest_checkpoint(run_dir)
    if last is not None:
        return f"a run (checkpoint at iteration {_iteration(last)})"
    return None


def clear_run(run_dir: Path) -> None:
    """Delete what an earlier run wrote into ``run_dir`` (``--overwrite``); other files stay."""
    for name in RUN_FILES:
        p = Path(run_dir) / name
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
