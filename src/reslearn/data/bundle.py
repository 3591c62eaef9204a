"""What a data set gives the trainer (``DataBundle``) and where data is looked for: the pieces
the data set builders (``reslearn.data``, ``reslearn.apps``, ``reslearn.speech``) share with the
engine, kept here so that they need not import the engine."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import DataConfig
from .source import BatchSource

__all__ = ["DataBundle", "default_data_roots", "resolve_root"]

@dataclass
class DataBundle:
    """A data set ready for training: the training source, the evaluation sources by split name,
    the shapes and classes the model is built for, the input normaliser's state (recorded in
    checkpoints), sizes and notes for run.json, and the task (None: classification)."""

    train: BatchSource
    evals: dict[str, BatchSource]  # "val" (held out from train, if any) and "test"
    num_classes: int
    in_chans: int
    image_size: tuple[int, int]
    classes: list[str]
    normalizer_state: dict[str, torch.Tensor] = field(default_factory=dict)
    train_size: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    task: Any = None  # a Task; None = classification


def default_data_roots() -> list[Path]:
    """Where data is looked for when ``data.root`` is empty, in order."""
    roots = []
    if os.environ.get("RESLEARN_DATA_DIR"):
        roots.append(Path(os.environ["RESLEARN_DATA_DIR"]))
    roots += [Path.cwd() / ".data", Path.home() / ".cache" / "reslearn", Path.home() / "data"]
    return roots


_MARKERS = {
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
}


def resolve_root(cfg: DataConfig) -> Path | None:
    """The folder to read ``cfg.name`` from (``None`` lets IDX loaders find Debian's copy)."""
    if cfg.root:
        return Path(cfg.root).expanduser()
    marker = _MARKERS.get(cfg.name)
    if marker:
        for r in default_data_roots():
            if (r / marker).is_dir():
                return r
        return default_data_roots()[0] if cfg.download else None
    return None

