"""What a data set gives the trainer (``DataBundle``) and where data is looked for: the pieces
the data set builders (``reslearn.data``, ``reslearn.apps``, ``reslearn.speech``) share with the
engine, kept here so that they need not import the engine."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import DataConfig
from ..errors import ReslearnError
from .source import BatchSource

__all__ = ["DataBundle", "default_data_roots", "resolve_root", "DATA_FIELDS", "check_fields"]

# The DataConfig fields each data set reads, beyond name, root and split_seed, which all read.
# A field set away from its default for a data set that does not read it is an error, not ignored.
_SPLITS = ("val_size", "train_subset", "test_subset")
_IN_MEMORY = (*_SPLITS, "augment", "normalize")
_FOLDER = ("image_size", "workers", "on_bad_file", "shared_classes")
DATA_FIELDS: dict[str, tuple[str, ...]] = {
    "cifar10": (*_IN_MEMORY, "download"),
    "cifar100": (*_IN_MEMORY, "download"),
    "mnist": _IN_MEMORY,
    "fashion-mnist": _IN_MEMORY,
    "imagefolder-memory": (*_IN_MEMORY, *_FOLDER),
    "imagefolder": ("train_subset", "test_subset", "augment", *_FOLDER),
    "speech-commands": ("train_subset", "test_subset", "augment", "options"),
    "digit-strings": ("options",),
    "stego": ("augment", "options"),
    "utkface": ("augment", "options"),
}
_WHY = {
    ("imagefolder", "val_size"): "its val/ folder is the held-out split (data.name=imagefolder-memory holds "
                                 "out part of train/)",
    ("imagefolder", "normalize"): "it subtracts the ImageNet per-channel mean",
    ("speech-commands", "val_size"): "it has its own validation split (validation_list.txt); leave data.val_size at 0",
}


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


def check_fields(cfg: DataConfig) -> None:
    """Refuse, naming the data set, a field of ``cfg`` that its data set does not read
    (:data:`DATA_FIELDS`) set away from its default: it would be silently ignored."""
    default = DataConfig()
    reads = DATA_FIELDS.get(cfg.name, ())
    for f in dataclasses.fields(DataConfig):
        if f.name in ("name", "root", "split_seed") or f.name in reads:
            continue
        if getattr(cfg, f.name) != getattr(default, f.name):
            why = _WHY.get((cfg.name, f.name)) or f"it reads {', '.join(f'data.{k}' for k in reads) or 'no other field'}"
            raise ReslearnError(f"data.{f.name} does not apply to {cfg.name}: {why}")
