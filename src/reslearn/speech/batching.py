"""The batch order of the speech sources: the same global-batch sharding as
``reslearn.data.source.InMemorySource`` (one global batch of ``batch_size`` cut into
``world_size * accum_steps`` shards, this rank yielding its own in turn), so speech data resumes
and distributes exactly like the image sources."""

from __future__ import annotations

from typing import Iterator

import torch

from ..models.base import check_positive

__all__ = ["ShardedOrder", "sharding_for"]


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
