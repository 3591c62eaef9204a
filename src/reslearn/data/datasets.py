"""The data sets, each declared once (``data.name`` -> :class:`DataSetSpec`): how it is loaded,
the ``DataConfig`` fields it reads, and whether its standard augmentation flips. The engine asks
this registry; nothing here imports the engine.

Three kinds: an *in-memory* set has a ``load`` function giving (train, test) ``ArrayDataset``s,
which the engine augments on the device; ``imagefolder`` streams through a DataLoader; an
*application* set names a ``builder`` ("module:function", imported only when used) that makes its
own ``DataBundle`` and task from ``(cfg, batch_size=, seed=, device=, rank=, world_size=,
accum_steps=, **data.options)``: its keyword parameters after those are its options.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from ..config import DataConfig
from ..errors import ReslearnError
from ..system import available_cores
from .arrays import ArrayDataset

__all__ = ["DataSetSpec", "DATA_SETS", "ALWAYS_READ", "register", "data_set", "check_fields", "app_builder", "describe"]

Loader = Callable[[DataConfig, "list[str] | None"], "tuple[ArrayDataset, ArrayDataset]"]


@dataclass(frozen=True)
class DataSetSpec:
    """One data set.

    Attributes:
        name: its ``data.name``.
        reads: the ``DataConfig`` fields it reads besides those all read (:data:`ALWAYS_READ`);
            any other set away from its default is an error (:func:`check_fields`).
        load: in-memory sets: ``load(cfg, classes)`` -> (train, test), the test split labelled by
            the positions of ``classes`` (a model's) where given.
        builder: application sets: "module:function" of the bundle builder.
        flip: in-memory sets: whether the standard augmentation flips horizontally.
        why: field -> the reason it does not apply, for the error line.
    """

    name: str
    reads: tuple[str, ...]
    load: Loader | None = None
    builder: str = ""
    flip: bool = True
    why: Mapping[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "memory" if self.load is not None else "application" if self.builder else "folder"


DATA_SETS: dict[str, DataSetSpec] = {}
# The fields every data set reads (data.name aside): where it is, the seed of its splits and
# subsets, and the evaluation batch size (reslearn.data.bundle.eval_batch_size).
ALWAYS_READ = ("root", "split_seed", "eval_batch_size")


def register(spec: DataSetSpec) -> DataSetSpec:
    """Add ``spec`` to :data:`DATA_SETS` (a second data set of the same name is an error)."""
    if spec.name in DATA_SETS:
        raise ValueError(f"data set {spec.name!r} is already registered")
    unknown = set(spec.reads) - {f.name for f in dataclasses.fields(DataConfig)}
    if unknown:
        raise ValueError(f"{spec.name} reads unknown DataConfig fields {sorted(unknown)}")
    DATA_SETS[spec.name] = spec
    return spec


def data_set(name: str) -> DataSetSpec:
    """The spec of ``data.name`` ``name``; an unknown name is one line listing the known ones."""
    if name not in DATA_SETS:
        raise ReslearnError(f"data.name must be one of {', '.join(DATA_SETS)}; got {name!r}")
    return DATA_SETS[name]


def check_fields(cfg: DataConfig) -> None:
    """Refuse, naming the data set, a field of ``cfg`` that its data set does not read set away
    from its default: it would be silently ignored."""
    spec, default = data_set(cfg.name), DataConfig()
    for f in dataclasses.fields(DataConfig):
        if f.name == "name" or f.name in ALWAYS_READ or f.name in spec.reads:
            continue
        if getattr(cfg, f.name) != getattr(default, f.name):
            why = spec.why.get(f.name) or f"it reads {', '.join(f'data.{k}' for k in spec.reads) or 'no other field'}"
            raise ReslearnError(f"data.{f.name} does not apply to {cfg.name}: {why}")


def app_builder(name: str):
    """An application data set's builder and its options (the keyword parameters after the
    engine's own), imported lazily."""
    import importlib
    import inspect

    module, func = data_set(name).builder.split(":")
    builder = getattr(importlib.import_module(module), func)
    params = {k: p for k, p in inspect.signature(builder).parameters.items() if k not in (
        "cfg", "batch_size", "seed", "device", "rank", "world_size", "accum_steps")}
    return builder, params


def describe(name: str) -> list[tuple[str, str, str]]:
    """The settings data set ``name`` reads, as ``(key as typed on the command line, type,
    default)``: its ``DataConfig`` fields (:attr:`DataSetSpec.reads`) and, for
    an application data set, its builder's options. ``reslearn data NAME`` prints them."""
    import typing

    if name not in DATA_SETS:
        raise ReslearnError(f"no data set {name!r}; known: {', '.join(DATA_SETS)}")
    types, default = typing.get_type_hints(DataConfig), DataConfig()
    rows = [(f"data.{k}", getattr(types[k], "__name__", str(types[k])), repr(getattr(default, k)))
            for k in (*ALWAYS_READ, *DATA_SETS[name].reads) if k != "options"]
    if DATA_SETS[name].kind == "application":
        rows += [(f"data.options.{k}", str(p.annotation), repr(p.default)) for k, p in app_builder(name)[1].items()]
    return rows



# ----------------------------------------------------------------------------- loaders


def _load_cifar(cfg: DataConfig, classes: list[str] | None) -> tuple[ArrayDataset, ArrayDataset]:
    from .bundle import default_data_roots, resolve_root
    from .cifar import load_cifar

    root = resolve_root(cfg)
    if root is None:
        where = ", ".join(str(r) for r in default_data_roots())
        raise ReslearnError(f"{cfg.name} not found in {where}; set data.root=DIR or data.download=true")
    return (load_cifar(root, name=cfg.name, train=True, download=cfg.download),
            load_cifar(root, name=cfg.name, train=False, download=False))


def _load_idx(cfg: DataConfig, classes: list[str] | None) -> tuple[ArrayDataset, ArrayDataset]:
    from .idx import load_idx

    root = Path(cfg.root).expanduser() if cfg.root else None  # None: Debian's copy
    return load_idx(root, name=cfg.name, train=True), load_idx(root, name=cfg.name, train=False)


def _load_folder(cfg: DataConfig, classes: list[str] | None) -> tuple[ArrayDataset, ArrayDataset]:
    from .folder import load_image_folder_arrays

    if not cfg.root:
        raise ReslearnError("data.root must name the image folder (with train/ and val/ or test/)")
    cache = Path(cfg.root).expanduser() / ".reslearn-cache"
    # decoded before training starts, so "auto" may take every core this process may use
    threads = available_cores() if cfg.workers == "auto" else max(int(cfg.workers), 1)
    kw = dict(size=cfg.image_size or None, on_error=cfg.on_bad_file, workers=threads)
    try:
        cache.mkdir(exist_ok=True)
        kw["cache_dir"] = cache
    except OSError:  # read-only data folder: decode without a cache
        pass
    tr = load_image_folder_arrays(cfg.root, split="train", **kw)
    te = load_image_folder_arrays(cfg.root, split="val", classes=classes or tr.classes,
                                  shared_classes=cfg.shared_classes, **kw)
    return tr, te


# ----------------------------------------------------------------------------- the data sets

# The split vocabulary (reslearn.config.DataConfig): data.val_size / data.test_size hold out a
# validation / test split (a count or a share), data.train_subset / data.test_subset cut the
# training / each evaluation split, all drawn by data.split_seed.
_SPLITS = ("val_size", "train_subset", "test_subset")
_IN_MEMORY = (*_SPLITS, "augment", "normalize")
_FOLDER = ("image_size", "workers", "on_bad_file", "shared_classes")
_OWN_TEST = {"test_size": "its test split is its own (an image folder's val/); data.test_subset "
                          "evaluates on part of it"}

for _name in ("cifar10", "cifar100"):
    register(DataSetSpec(_name, (*_IN_MEMORY, "download"), load=_load_cifar, why=_OWN_TEST))
# 28x28 digits and clothes: padded and cropped, never flipped (it would change some classes' meaning).
for _name in ("fashion-mnist", "mnist"):
    register(DataSetSpec(_name, _IN_MEMORY, load=_load_idx, flip=False, why=_OWN_TEST))
register(DataSetSpec("imagefolder-memory", (*_IN_MEMORY, *_FOLDER), load=_load_folder, why=_OWN_TEST))
register(DataSetSpec("imagefolder", ("train_subset", "test_subset", "augment", *_FOLDER), why={
    **_OWN_TEST,
    "val_size": "its val/ folder is the held-out split (data.name=imagefolder-memory holds out part of train/)",
    "normalize": "it subtracts the ImageNet per-channel mean"}))
register(DataSetSpec("speech-commands", ("train_subset", "test_subset", "augment", "options"),
                     builder="reslearn.speech.commands:build_bundle", why={
                         "val_size": "it has its own validation split (validation_list.txt); leave data.val_size at 0",
                         "test_size": "it has its own test split (testing_list.txt); data.test_subset evaluates on "
                                      "part of it"}))
register(DataSetSpec("digit-strings", ("options",), builder="reslearn.speech.digits:build_bundle"))
# One pool of samples each: the shared split fields hold out and cut its val and test splits.
_POOL = ("val_size", "test_size", "train_subset", "test_subset")
register(DataSetSpec("stego", (*_POOL, "augment", "options"), builder="reslearn.apps.stego:build_bundle"))
register(DataSetSpec("utkface", (*_POOL, "augment", "options"), builder="reslearn.apps.faces:build_bundle"))
