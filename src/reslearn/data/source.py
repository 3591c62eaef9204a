"""The one contract between data and the training engine: a *batch source*.

A source yields the batches of one epoch, deterministically given ``(seed, epoch)``, and can start
part-way through an epoch (``start``). That is all resumption needs: a checkpoint stores
``(epoch, batch index)`` and the resumed run replays the same order and the same augmentation.
Sources shard themselves per rank for DistributedDataParallel.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol, runtime_checkable

import torch

from ..models.base import check_positive

__all__ = ["BatchSource", "InMemorySource", "ShardedOrder", "batch_generator", "sharding_for"]


@runtime_checkable
class BatchSource(Protocol):
    """``len(source)`` batches per epoch (this rank's); ``iter_epoch`` yields ``(inputs, targets)``
    already on the training device, ready for the model."""

    def __len__(self) -> int: ...

    def iter_epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Any, Any]]: ...


def batch_generator(
    seed: int, epoch: int, index: int, device: torch.device | str = "cpu", shard: int = 0
) -> torch.Generator:
    """A generator for the augmentation of one batch (one shard of it), a pure function of
    (seed, epoch, index, shard), so a resumed run draws exactly what the uninterrupted run drew,
    and the shards of a global batch (DDP ranks, accumulation steps) draw independently."""
    g = torch.Generator(device=device)
    g.manual_seed(((seed * 1_000_003 + epoch) * 1_000_003 + index) * 1009 + shard)
    return g


class ShardedOrder:
    """Index bookkeeping for a source of ``size`` examples: ``len()`` micro-batches per epoch
    for this rank, and ``shards(epoch, start)`` yielding (global batch, shard, indices)."""

    def __init__(
        self,
        size: int,
        *,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        accum_steps: int = 1,
    ) -> None:
        check_positive("batch_size", batch_size)
        check_positive("world_size", world_size)
        check_positive("accum_steps", accum_steps)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size); got {rank!r}")
        if batch_size % (world_size * accum_steps):
            raise ValueError(
                f"batch_size {batch_size} is not divisible by world_size x accum_steps = "
                f"{world_size * accum_steps}"
            )
        self.size, self.batch_size = size, batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.rank, self.world_size, self.accum_steps = rank, world_size, accum_steps

    @property
    def batches_per_epoch(self) -> int:
        n = self.size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __len__(self) -> int:
        return self.batches_per_epoch * self.accum_steps

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.size)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=g)

    def shards(self, epoch: int, start: int = 0) -> Iterator[tuple[int, int, torch.Tensor]]:
        order = self.order(epoch)
        shards = self.world_size * self.accum_steps
        for m in range(start, len(self)):
            b, k = divmod(m, self.accum_steps)
            shard = self.rank * self.accum_steps + k
            # A short last batch is split as evenly as possible (some shards may be empty).
            idx = order[b * self.batch_size : (b + 1) * self.batch_size].tensor_split(shards)[shard]
            if len(idx):
                yield b, shard, idx


def sharding_for(train: bool, *, rank: int, world_size: int, accum_steps: int) -> dict[str, int]:
    """Training sources shard each batch over ranks and accumulation steps; evaluation sources
    give every rank the whole split in plain batches."""
    if train:
        return {"rank": rank, "world_size": world_size, "accum_steps": accum_steps}
    return {"rank": 0, "world_size": 1, "accum_steps": 1}


class InMemorySource:
    """Batches of a whole data set held as one uint8 tensor (CIFAR, MNIST-like).

    Augmentation runs on whole batches with tensor ops on the training device: no per-sample
    Python in the hot loop.

    Every global batch of ``batch_size`` is cut into ``world_size * accum_steps`` shards; this rank
    yields its ``accum_steps`` shards in turn (micro-batches). Under DDP each rank thus sees its own
    part of the same global batch, and a single process with ``accum_steps=world_size`` computes
    exactly what ``world_size`` ranks compute (the test of our DDP path relies on that).

    Args:
        images: uint8 (N, C, H, W), on any device (moved to ``device`` once).
        labels: int64 (N,).
        batch_size: global batch size.
        normalize: ``f(uint8 batch) -> float batch``.
        augment: ``f(uint8 batch, generator) -> uint8 batch`` (train-time), or None.
        shuffle / drop_last: per epoch, from a generator seeded with (seed, epoch).
        rank / world_size / accum_steps: see above.
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
        accum_steps: int = 1,
        channels_last: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W); got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.plan = ShardedOrder(len(images), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                                 seed=seed, rank=rank, world_size=world_size, accum_steps=accum_steps)
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.long)
        self.augment, self.normalize, self.seed = augment, normalize, seed
        self.channels_last = channels_last

    def __len__(self) -> int:
        """Micro-batches this rank yields per epoch."""
        return len(self.plan)

    def iter_epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for b, shard, idx in self.plan.shards(epoch, start):
            idx = idx.to(self.device)
            x = self.images.index_select(0, idx)
            if self.augment is not None:
                x = self.augment(x, batch_generator(self.seed, epoch, b, self.device, shard))
            x = self.normalize(x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels.index_select(0, idx)
