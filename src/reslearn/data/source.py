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


def batch_generator(
    seed: int, epoch: int, index: int, device: torch.device | str = "cpu", shard: int = 0
) -> torch.Generator:
    """A generator for the augmentation of one batch (one shard of it), a pure function of
    (seed, epoch, index, shard), so a resumed run draws exactly what the uninterrupted run drew,
    and the shards of a global batch (DDP ranks, accumulation steps) draw independently."""
    g = torch.Generator(device=device)
    g.manual_seed(((seed * 1_000_003 + epoch) * 1_000_003 + index) * 1009 + shard)
    return g


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
        shards = world_size * accum_steps
        if batch_size % shards:
            raise ValueError(
                f"batch_size {batch_size} is not divisible by world_size x accum_steps = {shards}"
            )
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.long)
        self.batch_size, self.augment, self.normalize = batch_size, augment, normalize
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.rank, self.world_size, self.accum_steps = rank, world_size, accum_steps
        self.channels_last = channels_last

    @property
    def batches_per_epoch(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __len__(self) -> int:
        """Micro-batches this rank yields per epoch."""
        return self.batches_per_epoch * self.accum_steps

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(len(self.images))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.images), generator=g)

    def iter_epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order(epoch)
        shards = self.world_size * self.accum_steps
        for m in range(start, len(self)):
            b, k = divmod(m, self.accum_steps)
            shard = self.rank * self.accum_steps + k
            # A short last batch is split as evenly as possible (some shards may be empty).
            idx = order[b * self.batch_size : (b + 1) * self.batch_size].tensor_split(shards)[shard]
            if len(idx) == 0:
                continue
            idx = idx.to(self.device)
            x = self.images.index_select(0, idx)
            if self.augment is not None:
                x = self.augment(x, batch_generator(self.seed, epoch, b, self.device, shard))
            x = self.normalize(x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels.index_select(0, idx)
