"""CIFAR-10 and CIFAR-100 from the official python release (Krizhevsky 2009), as one uint8 tensor.

The folder names are torchvision's (``cifar-10-batches-py``, ``cifar-100-python``), so a root that
torchvision already downloaded into is reused. Batches are unpickled with
:func:`~reslearn.data.safe_pickle.restricted_load`, never plain ``pickle.load``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ReslearnError
from .arrays import ArrayDataset
from .download import extract_tar, fetch, file_digest
from .safe_pickle import restricted_load

__all__ = ["load_cifar", "download_cifar", "verify_cifar"]


@dataclass(frozen=True)
class _Release:
    title: str
    url: str
    md5: str  # of the .tar.gz
    folder: str  # what the archive extracts to
    train: tuple[tuple[str, str], ...]  # (file, md5) of the extracted batches
    test: tuple[tuple[str, str], ...]
    meta: tuple[str, str]
    names_key: str  # class names in the meta file
    labels_key: str  # labels in a batch

    @property
    def files(self) -> tuple[tuple[str, str], ...]:
        return (*self.train, *self.test, self.meta)


# URLs and archive md5s: https://www.cs.toronto.edu/~kriz/cifar.html. Per-file md5s of the
# extracted batches: torchvision.datasets.CIFAR10 / CIFAR100 (train_list, test_list, meta).
_RELEASES: dict[str, _Release] = {
    "cifar10": _Release(
        title="CIFAR-10",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        train=(
            ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
            ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
            ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
            ("data_batch_4", "634d18415352ddfa80567beed471001a"),
            ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
        ),
        test=(("test_batch", "40351d587109b95175f43aff81a1287e"),),
        meta=("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
        names_key="label_names",
        labels_key="labels",
    ),
    "cifar100": _Release(
        title="CIFAR-100",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        train=(("train", "16019d7e3df5f24257cddd939b257f8d"),),
        test=(("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
        meta=("meta", "7973b15100ade9c7d40fb424638fde48"),
        names_key="fine_label_names",  # the 100-way task; coarse (20 superclass) labels are unused
        labels_key="fine_labels",
    ),
}

# One warning per unverified folder per process; and the verification result per folder state,
# so loading train then test hashes the ~180 MB once.
_warned_unverified: set[Path] = set()
_verified_cache: dict[tuple[Any, ...], bool] = {}


def _release(name: str) -> _Release:
    try:
        return _RELEASES[name]
    except KeyError:
        raise ValueError(f"name must be one of {sorted(_RELEASES)}; got {name!r}") from None


def verify_cifar(root: str | Path, *, name: str = "cifar10") -> bool:
    """True when every extracted file of the release under ``root`` has its official md5.

    False for a missing file or a local re-encoded copy (such as the project's test data).
    """
    rel = _release(name)
    folder = Path(root) / rel.folder
    paths = [folder / f for f, _ in rel.files]
    if not all(p.is_file() for p in paths):
        return False
    key = (folder.resolve(), rel.files, tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in paths))
    if key not in _verified_cache:
        _verified_cache[key] = all(file_digest(p) == md5 for p, (_, md5) in zip(paths, rel.files))
    return _verified_cache[key]


def download_cifar(root: str | Path, *, name: str = "cifar10", progress: bool = True) -> Path:
    """Download and extract the official CIFAR python release into ``root``.

    Skips the download when the release is already extracted with official checksums, and the
    fetch when ``root`` holds the archive with its official md5. The archive is written
    atomically and checked against the official md5 before extraction (``tarfile`` with
    ``filter="data"``).

    Returns:
        The extracted folder, ``root/cifar-10-batches-py`` or ``root/cifar-100-python``.
    """
    rel = _release(name)
    root = Path(root)
    if verify_cifar(root, name=name):
        return root / rel.folder
    root.mkdir(parents=True, exist_ok=True)
    archive = root / Path(rel.url).name
    if not (archive.is_file() and file_digest(archive) == rel.md5):
        fetch(rel.url, archive, digest=rel.md5, progress=progress)
    extract_tar(archive, root / rel.folder, inner=rel.folder)
    return root / rel.folder


def _read_pickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            obj = restricted_load(f)
    except Exception as e:  # truncated, corrupt or hostile: any failure means "not a CIFAR file"
        raise ReslearnError(f"{path}: not a readable CIFAR batch ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise ReslearnError(f"{path}: not a CIFAR batch (a {type(obj).__name__}, not a dict)")
    return obj


def _read_batch(path: Path, labels_key: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    d = _read_pickle(path)
    data, labels = d.get("data"), d.get(labels_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise ReslearnError(f"{path}: 'data' is not a uint8 N x 3072 array (got {type(data).__name__} {shape})")
    if labels is None or len(labels) != len(data):
        raise ReslearnError(f"{path}: {len(data)} images but {None if labels is None else len(labels)} '{labels_key}'")
    lab = np.asarray(labels, dtype=np.int64)
    if len(lab) and (lab.min() < 0 or lab.max() >= n_classes):
        raise ReslearnError(f"{path}: labels outside [0, {n_classes})")
    return data, lab


def load_cifar(root: str | Path, *, name: str = "cifar10", train: bool, download: bool = False) -> ArrayDataset:
    """Load the CIFAR-10 (``name="cifar10"``) or CIFAR-100 (``"cifar100"``, fine labels) train or
    test set from ``root/cifar-10-batches-py/`` or ``root/cifar-100-python/``.

    A copy whose checksums differ from the official release (e.g. re-encoded locally) loads with
    one warning that it is unverified.

    Returns:
        ``ArrayDataset`` with images uint8 (N, 3, 32, 32): 50000 train / 10000 test.

    Raises:
        ReslearnError: the data is missing (and ``download`` is False) or a file is corrupt.
    """
    rel = _release(name)
    folder = Path(root) / rel.folder
    wanted = [f for f, _ in (rel.train if train else rel.test)]
    missing = [f for f in (*wanted, rel.meta[0]) if not (folder / f).is_file()]
    if missing:
        if not download:
            raise ReslearnError(
                f"{rel.title} not found: no {folder / missing[0]}; pass download=True "
                "(or run scripts/prepare_data.sh for the project's local copy)"
            )
        download_cifar(root, name=name)
    if not verify_cifar(root, name=name) and folder.resolve() not in _warned_unverified:
        _warned_unverified.add(folder.resolve())
        warnings.warn(
            f"{folder}: checksums differ from the official {rel.title} release; using it as an unverified local copy",
            stacklevel=2,
        )
    meta = _read_pickle(folder / rel.meta[0])
    names = meta.get(rel.names_key)
    if not isinstance(names, list) or not names:
        raise ReslearnError(f"{folder / rel.meta[0]}: no '{rel.names_key}' list")
    classes = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
    parts = [_read_batch(folder / f, rel.labels_key, len(classes)) for f in wanted]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts])).view(-1, 3, 32, 32)  # rows: R, G, B planes
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return ArrayDataset(images=images, labels=labels, classes=classes, name=name)
