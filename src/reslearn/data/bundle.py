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

__all__ = ["DataBundle", "EVAL_BATCH_SIZE", "eval_batch_size", "default_data_roots", "resolve_root"]

# Samples per evaluation batch unless data.eval_batch_size says otherwise (never below the
# training batch). Evaluation keeps no activations for a backward pass, so it affords more than
# training; the number changes speed and memory, not the errors.
EVAL_BATCH_SIZE = 256


def eval_batch_size(cfg: DataConfig, batch_size: int) -> int:
    """Samples per evaluation batch of a run: ``data.eval_batch_size``, or (0) the larger of the
    training ``batch_size`` and :data:`EVAL_BATCH_SIZE`. Every data set's evaluation sources,
    and ``eval``/``ensemble``/``analyze``'s default, take it from here."""
    return cfg.eval_batch_size or max(batch_size, EVAL_BATCH_SIZE)


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

