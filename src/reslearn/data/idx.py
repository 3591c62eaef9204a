"""MNIST and Fashion-MNIST from their IDX files (LeCun et al.'s format, http://yann.lecun.com/exdb/mnist/).

IDX: a big-endian header ``0x00 0x00 <type> <ndim>`` (type 0x08 = unsigned byte), then ``ndim``
big-endian uint32 sizes, then the data. Images are ``idx3`` (N, 28, 28), labels ``idx1`` (N,).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import ReslearnError
from .arrays import ArrayDataset

__all__ = ["load_idx", "find_idx_root", "system_datasets_dir"]

_CLASSES = {
    # Xiao et al. 2017, https://github.com/zalandoresearch/fashion-mnist#labels
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "mnist": [str(d) for d in range(10)],
}
# Where Debian's dataset-fashion-mnist (and an mnist package) install the files, and the folders
# torchvision's FashionMNIST / MNIST download into (``root/<Name>/raw``), so both are reused.
# $RESLEARN_SYSTEM_DATASETS replaces /usr/share/datasets (tests point it at an empty folder to
# play a machine without the Debian package).
_SYSTEM_NAMES = {"fashion-mnist": "fashion-mnist", "mnist": "mnist"}
_TORCHVISION_DIRS = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}


def _check_name(name: str) -> None:
    if name not in _CLASSES:
        raise ValueError(f"name must be one of {sorted(_CLASSES)}; got {name!r}")


def _file(folder: Path, stem: str) -> Path | None:
    for p in (folder / f"{stem}.gz", folder / stem):
        if p.is_file():
            return p
    return None


def _has_idx(folder: Path) -> bool:
    return _file(folder, "train-images-idx3-ubyte") is not None or _file(folder, "t10k-images-idx3-ubyte") is not None


def find_idx_root(name: str = "fashion-mnist") -> Path | None:
    """The system folder holding ``name``'s IDX files (Debian's ``/usr/share/datasets/<name>/``),
    or None."""
    _check_name(name)
    folder = system_datasets_dir() / _SYSTEM_NAMES[name]
    return folder if _has_idx(folder) else None


def system_datasets_dir() -> Path:
    """Debian's data set folder, ``/usr/share/datasets`` (or ``$RESLEARN_SYSTEM_DATASETS``)."""
    return Path(os.environ.get("RESLEARN_SYSTEM_DATASETS") or "/usr/share/datasets")


def _read_idx(path: Path, *, ndim: int) -> np.ndarray:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise ReslearnError(f"{path}: cannot read ({e})") from e
    magic = 0x0800 | ndim  # unsigned byte data of ``ndim`` dimensions
    if len(raw) < 4 + 4 * ndim or int.from_bytes(raw[:4], "big") != magic:
        raise ReslearnError(f"{path}: not an IDX{ndim} unsigned-byte file (magic {raw[:4].hex()} != {magic:08x})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = memoryview(raw)[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)):
        raise ReslearnError(f"{path}: header says {shape} = {int(np.prod(shape))} bytes but {len(body)} follow (truncated?)")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def load_idx(root: str | Path | None = None, *, name: str = "fashion-mnist", train: bool) -> ArrayDataset:
    """Load the MNIST-format ``train-*`` or ``t10k-*`` image and label files (gzipped or raw).

    ``root`` may hold the files directly, or torchvision's layout (``root/FashionMNIST/raw``);
    None uses the system copy (:func:`find_idx_root`).

    Returns:
        ``ArrayDataset`` with images uint8 (N, 1, 28, 28); 60000 train / 10000 test for both sets.

    Raises:
        ReslearnError: files missing, a wrong magic number, a size mismatch or truncation (naming the file).
    """
    _check_name(name)
    if root is None:
        folder = find_idx_root(name)
        if folder is None:
            raise ReslearnError(
                f"{name} not found in {system_datasets_dir() / _SYSTEM_NAMES[name]}; pass its folder as root "
                f"(or install it: apt-get install dataset-{name})"
            )
    else:
        folder = Path(root)
        if not _has_idx(folder):
            for cand in (folder / _TORCHVISION_DIRS[name] / "raw", folder / name):
                if _has_idx(cand):
                    folder = cand
                    break
    prefix = "train" if train else "t10k"
    paths = {}
    for kind, stem in (("images", f"{prefix}-images-idx3-ubyte"), ("labels", f"{prefix}-labels-idx1-ubyte")):
        p = _file(folder, stem)
        if p is None:
            raise ReslearnError(f"{name}: no {folder / stem}[.gz]")
        paths[kind] = p
    images = _read_idx(paths["images"], ndim=3)
    labels = _read_idx(paths["labels"], ndim=1)
    if len(images) != len(labels):
        raise ReslearnError(f"{paths['labels']}: {len(labels)} labels for {len(images)} images in {paths['images'].name}")
    if len(labels) and labels.max() >= len(_CLASSES[name]):
        raise ReslearnError(f"{paths['labels']}: label {labels.max()} outside [0, {len(_CLASSES[name])})")
    return ArrayDataset(
        images=torch.from_numpy(images.copy()).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        classes=list(_CLASSES[name]),
        name=name,
    )
