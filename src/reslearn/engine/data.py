"""From a ``DataConfig`` to batch sources: the in-memory path (CIFAR, MNIST-like, small image
folders decoded once) with augmentation on the training device, and the ImageFolder path
(ImageNet-style) through a ``torch.utils.data.DataLoader``."""

from __future__ import annotations

import signal
from typing import Any, Callable, Iterator, Sequence

import torch

from ..config import DataConfig
from ..data.arrays import ArrayDataset, held_out, random_subset, train_val_split
from ..data.bundle import DataBundle, default_data_roots, eval_batch_size, resolve_root
from ..data.datasets import DATA_SETS, app_builder, check_fields, data_set
from ..data.source import InMemorySource, ShardedOrder
from ..errors import ReslearnError
from .device import auto_workers
from .interrupt import STOP_SIGNALS

__all__ = ["DataBundle", "build_data", "split_datasets", "subset_index", "default_data_roots", "resolve_root",
           "IN_MEMORY"]

# What the engine knows of the data sets comes from their declarations (reslearn.data.datasets).
IN_MEMORY = tuple(n for n, s in DATA_SETS.items() if s.kind == "memory")
APP_DATA = {n: s.builder for n, s in DATA_SETS.items() if s.kind == "application"}
KNOWN = tuple(DATA_SETS)


def subset_index(total: int, n: int, cfg: DataConfig) -> torch.Tensor | None:
    """Which ``n`` of ``total`` samples of ``cfg``'s data a subset keeps (None: all), for
    ``data.train_subset`` / ``data.test_subset`` and the ``--limit`` of eval and analyses.

    Image folders are listed class by class, so their first ``n`` would hold a class or two only
    (a 2,000-image "test set" of airplanes and cars): there the subset is a fixed random ``n``
    (seeded by ``data.split_seed``, the same on every run), kept in the original order. CIFAR and
    IDX files come in random order from their publishers, so their first ``n`` already is a random
    subset, and stays the one earlier runs used."""
    if n < 0:
        raise ReslearnError(f"limit must be >= 0 (0: all {total}); got {n}")
    if not n or n >= total:
        return None
    if cfg.name not in ("imagefolder", "imagefolder-memory"):
        return torch.arange(n)
    return random_subset(total, n, seed=cfg.split_seed)


def _subset(ds, n: int, cfg: DataConfig):
    index = subset_index(len(ds), n, cfg)
    if index is None:
        return ds
    if isinstance(ds, ArrayDataset):
        return ds.subset(index)
    sub = torch.utils.data.Subset(ds, index.tolist())
    sub.classes = ds.classes  # type: ignore[attr-defined]
    return sub


def split_datasets(cfg: DataConfig, splits: Sequence[str], *, classes: Sequence[str] | None = None,
                   transform: Callable | None = None, train_transform: Callable | None = None) -> dict[str, Any]:
    """The data of ``splits`` ("train", "val", "test") of ``cfg``'s image-classification data set,
    as training sees them: "val" is ``data.val_size`` held out of the training data
    (``data.split_seed``), "train" the rest cut to ``data.train_subset``, "val" and "test" cut to
    ``data.test_subset`` (:func:`subset_index`). Labels are positions in ``classes`` (a model's),
    matched by name (a missing or extra class: an error, or with ``data.shared_classes`` a warning);
    by default the training folder's.

    In-memory sets give ``ArrayDataset``s (uint8); ``imagefolder`` map-style datasets of
    ``(transform(image), label)`` (``train_transform`` for "train"), "val" and "test" both its
    val/ folder (else test/). The one builder of a split for the trainer (:func:`build_data`) and
    for eval, ensemble, analyze and export (``reslearn.engine.evaluate.eval_split``)."""
    if cfg.name not in IN_MEMORY:
        return _folder_splits(cfg, splits, classes, transform, train_transform)
    train, test = data_set(cfg.name).load(cfg, list(classes) if classes else None)
    parts = {"train": train, "test": test}
    if cfg.val_size:
        n_val = held_out(cfg.val_size, len(train), key="data.val_size", name=cfg.name)
        parts["train"], parts["val"] = train_val_split(train, val_size=n_val, seed=cfg.split_seed)
    elif "val" in splits:
        raise ReslearnError("this run held out no validation split (data.val_size=0)")
    out = {}
    for split in splits:
        ds = parts[split]
        if classes:
            ds = ds.relabel(classes, shared=cfg.shared_classes, where=f"{cfg.root or cfg.name} ({split})")
        out[split] = _subset(ds, cfg.train_subset if split == "train" else cfg.test_subset, cfg)
    return out


def _folder_splits(cfg, splits, classes, transform, train_transform) -> dict[str, Any]:
    from ..data.folder import ImageFolderDataset

    if not cfg.root:
        raise ReslearnError("data.root must name the image folder (with train/ and val/)")
    out, full = {}, {}
    for split in splits:
        train = split == "train"
        # val/test are labelled by the model's classes, else by the training folder's when read
        named = classes or (full["train"].classes if "train" in full else None)
        tf = (train_transform or transform) if train else transform
        full[split] = ImageFolderDataset(cfg.root, split="train" if train else "val", transform=tf,
                                         on_error=cfg.on_bad_file, classes=named, shared_classes=cfg.shared_classes)
        out[split] = _subset(full[split], cfg.train_subset if train else cfg.test_subset, cfg)
    return out


def build_data(
    cfg: DataConfig,
    *,
    batch_size: int,
    seed: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    accum_steps: int = 1,
    channels_last: bool = False,
) -> DataBundle:
    """The training and evaluation sources of ``cfg``'s data set (evaluation batches of
    :func:`eval_batch_size`), its shapes, classes and normaliser."""
    check_fields(cfg)  # and that cfg.name is a data set
    if cfg.name in APP_DATA:
        return _build_app(cfg, batch_size=batch_size, seed=seed, device=device, rank=rank,
                          world_size=world_size, accum_steps=accum_steps)
    if cfg.name == "imagefolder":
        return _build_folder(cfg, batch_size=batch_size, seed=seed, device=device, rank=rank,
                             world_size=world_size, accum_steps=accum_steps,
                             channels_last=channels_last)
    from ..data.augment import Normalizer, random_crop_flip

    evals_ds = split_datasets(cfg, ("train", "val", "test") if cfg.val_size else ("train", "test"))
    train = evals_ds.pop("train")
    normalizer = Normalizer.fit(train.images, mode=cfg.normalize).to(device)
    augment: Callable | None = None
    if cfg.augment == "standard":
        # He et al. 2016 Sec. 4.2 (CIFAR): pad 4, random crop, horizontal flip (where the data
        # set's declaration allows flipping).
        flip = data_set(cfg.name).flip
        augment = lambda x, g: random_crop_flip(x, g, padding=4, flip=flip)  # noqa: E731
    common = dict(normalize=normalizer, device=device, channels_last=channels_last)
    train_src = InMemorySource(
        train.images, train.labels, batch_size=batch_size, augment=augment, shuffle=True,
        drop_last=len(train) >= batch_size, seed=seed, rank=rank, world_size=world_size,
        accum_steps=accum_steps, **common,
    )
    ebs = eval_batch_size(cfg, batch_size)
    evals = {k: InMemorySource(d.images, d.labels, batch_size=ebs, **common) for k, d in evals_ds.items()}
    return DataBundle(
        train=train_src,
        evals=evals,
        num_classes=len(train.classes),
        in_chans=train.images.shape[1],
        image_size=tuple(train.images.shape[2:]),
        classes=list(train.classes),
        normalizer_state=normalizer.state_dict(),
        train_size=len(train),
        info={"name": train.name, "train": len(train), **{k: len(v) for k, v in evals_ds.items()}},
    )


def _leave_stop_signals_to_the_trainer(worker_id: int) -> None:
    """A DataLoader worker ignores SIGINT and SIGTERM: a Ctrl-C at a terminal, and the signal
    torchrun sends on, reach the whole process group, and a worker that stopped would fail the
    batch the iteration waits for. The training process stops at the end of that iteration
    (engine.interrupt) and shuts its workers down as usual."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


# Options of the application data sets that became shared data.* fields (one split vocabulary).
_MOVED = {"test_fraction": "data.test_size", "val_fraction": "data.val_size", "eval_batch_size": "data.eval_batch_size"}


def _build_app(cfg: DataConfig, **engine: Any) -> DataBundle:
    builder, params = app_builder(cfg.name)
    for key in cfg.options:
        if key in _MOVED and key not in params:
            raise ReslearnError(f"data.options.{key} is now {_MOVED[key]} (shared by every data set; "
                                f"reslearn data {cfg.name} lists what {cfg.name} reads)")
        if key not in params:
            raise ReslearnError(f"unknown option data.options.{key} for {cfg.name}; allowed: {', '.join(params)}")
    # A list option typed as one word on the command line (data.options.eval_splits=test)
    # arrives as a string, which a Sequence[str] would iterate letter by letter.
    options = {k: [s.strip() for s in v.split(",") if s.strip()]
               if isinstance(v, str) and "Sequence" in str(params[k].annotation) else v
               for k, v in cfg.options.items()}
    return builder(cfg, **engine, **options)


class LoaderSource:
    """ImageFolder data through a DataLoader: per-sample decoding and transforms in worker
    processes (ImageNet does not fit in memory). The order of an epoch is a permutation seeded by
    (seed, epoch), sharded per rank, and can start at any batch, so runs resume at the right
    place; augmentation draws come from the workers' seeded RNGs."""

    def __init__(self, dataset, *, batch_size: int, shuffle: bool, seed: int, device: torch.device,
                 rank: int, world_size: int, accum_steps: int, workers: int, drop_last: bool,
                 channels_last: bool) -> None:
        self.plan = ShardedOrder(len(dataset), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                                 seed=seed, rank=rank, world_size=world_size, accum_steps=accum_steps)
        self.dataset, self.seed, self.device = dataset, seed, device
        self.workers, self.channels_last = workers, channels_last

    def __len__(self) -> int:
        return len(self.plan)

    def iter_epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = [idx.tolist() for _, _, idx in self.plan.shards(epoch, start)]
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=batches, num_workers=self.workers,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
            worker_init_fn=_leave_stop_signals_to_the_trainer,
            generator=torch.Generator().manual_seed(self.seed * 7919 + epoch * 104729 + start),
        )
        for x, y in loader:
            x = x.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)


def _build_folder(cfg: DataConfig, *, batch_size, seed, device, rank, world_size, accum_steps,
                  channels_last) -> DataBundle:
    from ..data import transforms

    crop = cfg.image_size or 224
    # He et al.'s scale augmentation, shorter side in [256, 480] for 224 crops, scaled with the
    # crop size (Inception's 299 crops: [342, 643]).
    scale = (round(crop * 256 / 224), round(crop * 480 / 224))
    eval_tf = transforms.imagenet_eval_transform(crop=crop, resize=transforms.eval_resize(crop))
    train_tf = transforms.imagenet_train_transform(crop=crop, scale=scale) if cfg.augment == "standard" else eval_tf
    parts = split_datasets(cfg, ("train", "test"), transform=eval_tf, train_transform=train_tf)
    tr, te = parts["train"], parts["test"]
    mk = dict(seed=seed, device=device, workers=auto_workers(cfg.workers), channels_last=channels_last)
    train_src = LoaderSource(tr, batch_size=batch_size, shuffle=True, rank=rank, world_size=world_size,
                             accum_steps=accum_steps, drop_last=len(tr) >= batch_size, **mk)
    test_src = LoaderSource(te, batch_size=eval_batch_size(cfg, batch_size), shuffle=False, rank=0,
                            world_size=1, accum_steps=1, drop_last=False, **mk)
    classes = list(tr.classes)
    return DataBundle(train=train_src, evals={"test": test_src}, num_classes=len(classes), in_chans=3,
                      image_size=(crop, crop), classes=classes, train_size=len(tr),
                      normalizer_state=transforms.imagenet_normalizer().state_dict(),
                      info={"name": "imagefolder", "train": len(tr), "test": len(te)})
