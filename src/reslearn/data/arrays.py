"""A whole image data set held as one uint8 tensor, and the fixed held-out split of the papers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import ReslearnError

__all__ = ["ArrayDataset", "train_val_split", "held_out", "random_subset", "keep_random"]


@dataclass
class ArrayDataset:
    """Images and labels of a small data set (CIFAR, MNIST-like), ready for ``InMemorySource``.

    Attributes:
        images: uint8 (N, C, H, W).
        labels: int64 (N,).
        classes: class names; ``labels`` index into it.
        name: the data set's name (e.g. ``"cifar10"``).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W); got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(f"labels must be int64 (N,); got {self.labels.dtype} {tuple(self.labels.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> ArrayDataset:
        """The samples at ``index`` (int64 indices or a bool mask), same classes and name."""
        index = torch.as_tensor(index)
        return ArrayDataset(self.images[index], self.labels[index], list(self.classes), self.name)

    def relabel(self, classes: Sequence[str], *, shared: bool = False, where: str = "") -> ArrayDataset:
        """The samples with labels as positions in ``classes`` (a model's), matched by name
        (:func:`reslearn.data.folder.match_classes`: a missing or extra class is an error, or with
        ``shared`` a warning, the samples of classes ``classes`` lacks left out)."""
        from .folder import match_classes

        if list(classes) == list(self.classes):
            return self
        kept = set(match_classes(self.classes, classes, where=where or self.name, shared=shared))
        pos = {c: i for i, c in enumerate(classes)}
        new = torch.tensor([pos[c] if c in kept else -1 for c in self.classes], dtype=torch.int64)[self.labels]
        keep = new >= 0
        return ArrayDataset(self.images[keep], new[keep], list(classes), self.name)


def train_val_split(ds: ArrayDataset, *, val_size: int, seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
    """Split off a fixed random held-out set, e.g. He et al. 2016 Sec. 4.2's 45k/5k CIFAR-10 split
    (``val_size=5000``).

    The permutation comes from a CPU ``torch.Generator`` seeded with ``seed``, so the split is the
    same on every run and machine (CPU ``randperm`` does not depend on the accelerator). Both parts
    keep the original order of the samples.

    Returns:
        ``(train, val)``, disjoint, together all of ``ds``.
    """
    n = len(ds)
    if not 0 < val_size < n:
        raise ValueError(f"val_size must be in [1, {n - 1}] for a data set of {n}; got {val_size}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, _ = perm[:val_size].sort()
    train_idx, _ = perm[val_size:].sort()
    return ds.subset(train_idx), ds.subset(val_idx)


def held_out(size: int | float, n: int, *, key: str, name: str) -> int:
    """How many of the ``n`` samples of data set ``name`` the split field ``key``
    (``data.val_size`` / ``data.test_size``) holds out: ``size`` itself when it is a count, the
    share ``0 < size < 1`` of ``n`` (rounded) when it is a fraction; at least one sample must be
    left on each side."""
    count = int(round(size * n)) if isinstance(size, float) else int(size)
    if size and not 0 < count < n:
        raise ReslearnError(f"{key}={size} leaves an empty split of the {n} samples of {name}")
    return count


def random_subset(total: int, n: int, *, seed: int) -> torch.Tensor | None:
    """A fixed random ``n`` of ``total`` indices (seeded by ``seed``, the same on every run),
    in their original order; None when ``n`` is 0 or keeps them all."""
    if not n or n >= total:
        return None
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def keep_random(ds, n: int, *, seed: int):
    """``ds.subset`` of a fixed random ``n`` of its samples (:func:`random_subset`), or ``ds``
    itself when ``n`` is 0 or not smaller; for any sized split with a ``subset(index)`` method
    (speech clips, face sets, cover/stego pairs)."""
    index = random_subset(len(ds), n, seed=seed)
    return ds if index is None else ds.subset(index)
