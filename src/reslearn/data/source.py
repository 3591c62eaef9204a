"""The one contract between data and the training engine: a *batch source*.

A source yields the batches of one epoch, deterministically given ``(seed, epoch)``, and can start
part-way through an epoch (``start``). That is all resumption needs: a checkpoint stores
``(epoch, batch index)`` and the resumed run replays the same order and the same augmentation.
Sources shard themselves per rank for DistributedDataParallel.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol, runtime_checkable

import torch

__all__ = ["BatchSource", "InMemorySource", "batch_generator"]


@runtime_checkable
class BatchSource(Protocol):
    """``len(source)`` batches per epoch (this rank's); ``iter_epoch`` yields ``(inputs, targets)``
    already on the training device, ready for the model."""

    def __len__(self) -> int: ...

    def iter_epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Any, Any]]: ...


def batch_generator(seed: int, epoch: int, index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for the augmentation of one batch, a pure function of (seed, epoch, index), so
    a resumed run draws exactly what the uninterrupted run drew."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + epoch) * 1_000_003 + index)
    return g


class InMemorySource:
    """Batches of a whole data set held as one uint8 tensor (CIFAR, MNIST-like).

    Augmentation runs on whole batches with tensor ops on the training device: no per-sample
    Python in the hot loop.

    Args:
        images: uint8 (N, C, H, W), on any device (moved to ``device`` once).
        labels: int64 (N,).
        batch_size: global batch size; each of ``world_size`` ranks takes ``batch_size // world``.
        augment: ``f(uint8 batch, generator) -> uint8 batch`` (train-time), or None.
        normalize: ``f(uint8 batch) -> float batch``.
        shuffle / drop_last: per epoch, from a generator seeded with (seed, epoch).
        rank / world_size: this process's shard of every global batch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        normalize: Callable[[torch.Tensor], torch.Tensor],
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W); got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by world_size {world_size}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.long)
        self.batch_size, self.augment, self.normalize = batch_size, augment, normalize
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(len(self.images))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.images), generator=g)

    def iter_epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order(epoch)
        per_rank = self.batch_size // self.world_size
        for b in range(start, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            if self.world_size > 1:
                # Every rank sees its contiguous slice of the same global batch; a short last
                # batch is split as evenly as possible.
                idx = idx.tensor_split(self.world_size)[self.rank] if len(idx) < self.batch_size \
                    else idx[self.rank * per_rank : (self.rank + 1) * per_rank]
            idx = idx.to(self.device)
            x = self.images.index_select(0, idx)
            if self.augment is not None:
                x = self.augment(x, batch_generator(self.seed, epoch, b, self.device))
            x = self.normalize(x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels.index_select(0, idx)
