"""UTKFace data, batches and the training task for age and gender estimation with three residual
networks (Lee et al., "Age and gender estimation using deep residual learning network", IWAIT
2018; model: :mod:`reslearn.models.age_gender`).

UTKFace (Zhang, Song, Qi, "Age progression/regression by conditional adversarial autoencoder",
CVPR 2017) keeps its labels in the file name, ``age_gender_race_timestamp.jpg.chip.jpg``: age
0-116, gender 0 male / 1 female, race 0-4. Names that do not have exactly these four fields or
hold an impossible value are skipped and counted by reason; in ``crop_part1`` that is two files
with three fields (the race, or the gender, is missing: which one cannot be told, so neither label
is trusted), one of which also reads as gender 3.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.source import InMemorySource
from ..errors import ReslearnError
from ..models.age_gender import AgeGenderNet
from ..tasks import Task

__all__ = [
    "FaceRecord",
    "FaceSet",
    "FaceSource",
    "AgeGenderTask",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "parse_utkface_name",
    "scan_utkface",
    "load_utkface",
    "utkface_root",
    "utkface_cache_dir",
    "build_bundle",
]

_NAME = re.compile(r"(\d+)_(\d+)_(\d+)_(\d+)\.jpg\.chip\.jpg")
MAX_AGE = 116
# torchvision's ImageNet statistics, so that its ResNet weights see the inputs they were trained on.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class FaceRecord:
    """One labelled face file: ``gender`` 1 = female, 0 = male (UTKFace's coding)."""

    name: str
    age: int
    gender: int
    race: int


def _classify(name: str) -> tuple[FaceRecord | None, str]:
    m = _NAME.fullmatch(name)
    if m is None:
        return None, "malformed name"
    age, gender, race = (int(v) for v in m.groups()[:3])
    if gender not in (0, 1):
        return None, "gender not 0/1"
    if not 1 <= age <= MAX_AGE:
        return None, f"age not 1-{MAX_AGE}"
    if not 0 <= race <= 4:
        return None, "race not 0-4"
    return FaceRecord(name, age, gender, race), ""


def parse_utkface_name(name: str) -> FaceRecord:
    """Labels of one UTKFace file name; ``ValueError`` says why a name is unusable."""
    rec, why = _classify(name)
    if rec is None:
        raise ValueError(f"{name}: {why} (expected age_gender_race_timestamp.jpg.chip.jpg)")
    return rec


def scan_utkface(root: str | Path) -> tuple[list[FaceRecord], dict[str, int]]:
    """The usable faces under ``root`` (sorted by name) and the count of skipped ``.jpg`` files
    per reason."""
    root = Path(root)
    if not root.is_dir():
        raise ReslearnError(f"UTKFace folder {root} does not exist")
    records, skipped = [], {}
    for name in sorted(p.name for p in root.iterdir() if p.is_file() and p.name.lower().endswith(".jpg")):
        rec, why = _classify(name)
        if rec is None:
            skipped[why] = skipped.get(why, 0) + 1
        else:
            records.append(rec)
    if not records:
        raise ReslearnError(f"no UTKFace images (age_gender_race_timestamp.jpg.chip.jpg) in {root}")
    return records, skipped


@dataclass
class FaceSet:
    """Decoded faces: ``images`` uint8 (N, 3, S, S), ``ages`` float32 (N,), ``genders`` int64 (N,)
    (1 female), ``names``; ``skipped`` counts the files left out, by reason."""

    images: torch.Tensor
    ages: torch.Tensor
    genders: torch.Tensor
    names: list[str]
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, index: Sequence[int] | torch.Tensor) -> FaceSet:
        idx = torch.as_tensor(index, dtype=torch.long)
        names = [self.names[i] for i in idx.tolist()]
        return FaceSet(self.images[idx], self.ages[idx], self.genders[idx], names, dict(self.skipped))

    def split(self, *, val_fraction: float, seed: int = 0) -> tuple[FaceSet, FaceSet]:
        """(train, val) by a seeded permutation; both keep the original order."""
        n = len(self)
        n_val = int(round(val_fraction * n))
        if not 0 < n_val < n:
            raise ValueError(f"val_fraction must leave both parts non-empty for {n} faces; got {val_fraction!r}")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        return self.subset(perm[n_val:].sort().values), self.subset(perm[:n_val].sort().values)


def _cache_key(paths: list[Path], size: int) -> str:
    h = hashlib.sha256(f"utkface-v1\0{size}\n".encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.name}\0{st.st_mtime_ns}\0{st.st_size}\n".encode())
    return h.hexdigest()[:24]


def load_utkface(
    root: str | Path,
    *,
    size: int = 224,
    limit: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    workers: int = 2,
    progress: bool = False,
) -> FaceSet:
    """Decode UTKFace (``.../crop_part1`` or the full set) into uint8 arrays at ``size`` x ``size``.

    Args:
        size: side of the decoded images (224 in the paper; smaller for CPU budgets), antialiased
            resize of the 200x200 aligned crops.
        limit: keep a seeded random subset of this many faces (``seed``), in name order.
        cache_dir: store the decoded arrays there (``.safetensors``, keyed by the files' names,
            sizes and mtimes and by ``size``) and read them back next time.
        workers: decoding threads.
    """
    from ..data.folder import decode_images

    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an integer >= 8; got {size!r}")
    root = Path(root)
    records, skipped = scan_utkface(root)
    if skipped:
        warnings.warn(
            f"UTKFace: skipped {sum(skipped.values())} files with unusable names ({skipped})", stacklevel=2
        )
    if limit is not None:
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer; got {limit!r}")
        pick = np.sort(np.random.default_rng(seed).permutation(len(records))[:limit])
        records = [records[i] for i in pick]
    paths = [root / r.name for r in records]
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"utkface-{size}px-{_cache_key(paths, size)}.safetensors"
        if cache.is_file():
            from safetensors import safe_open

            with safe_open(str(cache), framework="pt") as f:
                meta = f.metadata()
                t = {k: f.get_tensor(k) for k in ("images", "ages", "genders")}
            return FaceSet(t["images"], t["ages"], t["genders"], json.loads(meta["names"]), json.loads(meta["skipped"]))
    images, failed = decode_images(
        [(p, i) for i, p in enumerate(paths)], size=size, workers=workers, progress=progress, desc="utkface"
    )
    if failed:
        skipped["undecodable"] = len(failed)
        warnings.warn(f"UTKFace: {len(failed)} files could not be decoded (first: {failed[0][0]})", stacklevel=2)
        bad = {p for p, _ in failed}
        records = [r for r, p in zip(records, paths) if p not in bad]
    faces = FaceSet(
        images,
        torch.tensor([r.age for r in records], dtype=torch.float32),
        torch.tensor([r.gender for r in records], dtype=torch.int64),
        [r.name for r in records],
        skipped,
    )
    if cache is not None:
        from safetensors.torch import save_file

        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        save_file(
            {"images": faces.images.contiguous(), "ages": faces.ages, "genders": faces.genders},
            str(tmp),
            metadata={"names": json.dumps(faces.names), "skipped": json.dumps(skipped)},
        )
        os.replace(tmp, cache)
    return faces


def _random_hflip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(x), generator=g, device=g.device).to(x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


class FaceSource:
    """A ``BatchSource`` of faces: inputs float (B, 3, S, S) normalised with ImageNet statistics,
    targets float (B, 2) = ``[gender (1 female), age in years]``.

    Args:
        faces: the faces.
        batch_size: images per batch.
        train: shuffle, random horizontal flips, drop the last partial batch; otherwise fixed
            order, no augmentation, every face once.
        augment: override the flips (``None``: flip when ``train``).
        seed, device, and ``rank``/``world_size``/...: as ``InMemorySource``.
    """

    def __init__(
        self,
        faces: FaceSet,
        *,
        batch_size: int,
        train: bool = False,
        augment: bool | None = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
        **shard: Any,
    ) -> None:
        dev = torch.device(device)
        mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1)
        # Labels are sample indices, so the (gender, age) targets ride along with any shuffle or shard.
        self._inner = InMemorySource(
            faces.images,
            torch.arange(len(faces)),
            batch_size=batch_size,
            normalize=lambda x: (x.float() / 255.0 - mean) / std,
            augment=_random_hflip if (train if augment is None else augment) else None,
            shuffle=train,
            drop_last=train,
            seed=seed,
            device=dev,
            **shard,
        )
        self.targets = torch.stack([faces.genders.float(), faces.ages.float()], 1).to(dev)

    def __len__(self) -> int:
        return len(self._inner)

    def iter_epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, idx in self._inner.iter_epoch(epoch, start):
            yield x, self.targets.index_select(0, idx)


class AgeGenderTask(Task):
    """Training and evaluation of :class:`AgeGenderNet` (Lee et al. 2018).

    Loss: ``gender_weight * BCE(gender logit, gender) + age_weight * L1(age, true age)``, where
    the age comes from the network of the image's *true* gender (each age network is trained on
    its own gender's images; ``AgeGenderNet.forward(x, female)`` runs it so). The three networks
    share no parameters, so one optimiser over the sum trains each on its own loss.

    ``evaluate`` reports ``mae`` (years, of the combined age P(f) age_f + P(m) age_m; primary),
    ``gender_acc``/``gender_err`` (percent, threshold 0.5), ``mae_true_gender`` (years, the age
    network of the true gender: the age error with a perfect gender classifier) and ``loss``.
    """

    primary = "mae"
    # The engine's running training error: the gender error of the training batches, in percent
    # (the age error, in years, is the `{split}_err` column of evaluations).
    train_error_keys = ("gender_err", "n")

    def __init__(self, *, gender_weight: float = 1.0, age_weight: float = 1.0) -> None:
        if gender_weight < 0 or age_weight < 0 or gender_weight + age_weight == 0:
            raise ValueError(
                f"gender_weight and age_weight must be >= 0, not both 0; got {gender_weight}, {age_weight}"
            )
        self.gender_weight, self.age_weight = float(gender_weight), float(age_weight)

    def _terms(self, logit: torch.Tensor, age_pred: torch.Tensor, t: torch.Tensor, reduction: str = "mean"):
        bce = F.binary_cross_entropy_with_logits(logit.float(), t[:, 0], reduction=reduction)
        l1 = F.l1_loss(age_pred.float(), t[:, 1], reduction=reduction)
        return bce, l1

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        x, t = batch
        out = model(x, t[:, 0] > 0.5)  # (B, 2): gender logit, age of the true gender's network
        bce, l1 = self._terms(out[:, 0], out[:, 1], t)
        loss = self.gender_weight * bce + self.age_weight * l1
        with torch.no_grad():
            wrong = int(((out[:, 0] > 0) != (t[:, 0] > 0.5)).sum())
            ae = float((out[:, 1].float() - t[:, 1]).abs().sum())
        return loss, {"gender_err": wrong, "age_ae": ae, "n": len(x)}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, source: Any) -> dict[str, float]:
        n, loss, ae, ae_true, wrong = 0, 0.0, 0.0, 0.0, 0
        for x, t in source.iter_epoch(0):
            out = model(x).float()
            female = t[:, 0] > 0.5
            age_true_net = torch.where(female, out[:, 1], out[:, 2])
            bce, l1 = self._terms(out[:, 0], age_true_net, t, reduction="sum")
            loss += float(self.gender_weight * bce + self.age_weight * l1)
            ae += float((AgeGenderNet.combine(out) - t[:, 1]).abs().sum())
            ae_true += float(l1)
            wrong += int(((out[:, 0] > 0) != female).sum())
            n += len(x)
        if n == 0:
            raise ReslearnError("the evaluation source yielded no batches")
        return {
            "mae": ae / n,
            "gender_acc": 100.0 * (n - wrong) / n,
            "gender_err": 100.0 * wrong / n,
            "mae_true_gender": ae_true / n,
            "loss": loss / n,
            "n": n,
        }


# ------------------------------------------------------------------------------ engine glue

UTKFACE_SUBDIR = Path("utkface") / "crop_part1"


def utkface_root(root: str | Path = "") -> Path:
    """The folder of UTKFace images: ``root`` itself if it holds UTKFace files, else
    ``root/utkface/crop_part1``; with no ``root``, the first default data root (``engine.data.
    default_data_roots``) holding ``utkface/crop_part1``."""
    from ..data.bundle import default_data_roots

    if root:
        root = Path(root).expanduser()
        nested = root / UTKFACE_SUBDIR
        return nested if nested.is_dir() and not any(root.glob("*.jpg.chip.jpg")) else root
    for r in default_data_roots():
        if (r / UTKFACE_SUBDIR).is_dir():
            return r / UTKFACE_SUBDIR
    where = ", ".join(str(r / UTKFACE_SUBDIR) for r in default_data_roots())
    raise ReslearnError(f"UTKFace not found in {where}; set data.root=DIR")


def utkface_cache_dir(cache_dir: str, root: Path) -> Path | None:
    """The ``cache_dir`` option: ``""`` none, ``"auto"`` a ``.reslearn-cache`` folder beside the
    image folder ``root`` (none if it cannot be created, e.g. read-only data), else that path."""
    if not cache_dir:
        return None
    if cache_dir != "auto":
        return Path(cache_dir).expanduser()
    try:
        cache = root.parent / ".reslearn-cache"
        cache.mkdir(exist_ok=True)
        return cache
    except OSError:
        return None


def build_bundle(
    cfg: Any,
    *,
    batch_size: int,
    seed: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    accum_steps: int = 1,
    size: int = 224,
    limit: int = 0,
    cache_dir: str = "",
    gender_weight: float = 1.0,
    age_weight: float = 1.0,
) -> Any:
    """The engine's ``data.name: utkface``: faces split by a seeded permutation
    (``data.split_seed``) into train / (val) / test, with :class:`AgeGenderTask`.

    Splits, in the shared ``data.*`` fields, counted in faces: ``data.test_size`` and
    ``data.val_size`` (a share of all faces or a count; the best checkpoint is picked on val);
    ``data.train_subset`` / ``data.test_subset`` then keep a fixed random number of the training /
    each held-out split's faces.

    Options (``data.options``):
        size: decoded side (224 in the paper; 64 or 96 for CPU budgets).
        limit: a seeded random subset of this many faces (0 = all), before splitting.
        cache_dir: keep the decoded arrays there (see :func:`load_utkface`); "" = no cache;
            ``"auto"``: ``.reslearn-cache`` beside the image folder, when it can be created.
        gender_weight / age_weight: the loss weights of :class:`AgeGenderTask`.

    ``data.augment: standard`` flips training faces horizontally at random; ``none`` does not.
    """
    from ..data.bundle import DataBundle, eval_batch_size
    from .common import cut_splits, held_out_shares

    if not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be an integer >= 0; got {limit!r}")
    root = utkface_root(cfg.root)
    cache = utkface_cache_dir(cache_dir, root)
    with warnings.catch_warnings(record=True) as caught:  # skipped names go into info, not stderr
        warnings.simplefilter("always")
        faces = load_utkface(root, size=size, limit=limit or None, seed=cfg.split_seed, cache_dir=cache)
    test_share, val_share = held_out_shares(cfg, len(faces), what="faces")
    train, test = faces.split(val_fraction=test_share, seed=cfg.split_seed)
    held = {"test": test}
    if val_share:
        train, val = train.split(val_fraction=val_share / (1.0 - test_share), seed=cfg.split_seed)
        held = {"val": val, "test": test}
    train, held = cut_splits(cfg, train, held)
    if len(train) < batch_size:
        raise ReslearnError(f"{len(train)} training faces are fewer than one batch of {batch_size}")
    shard = dict(rank=rank, world_size=world_size, accum_steps=accum_steps)
    train_src = FaceSource(train, batch_size=batch_size, train=True, augment=cfg.augment == "standard",
                           seed=seed, device=device, **shard)
    ebs = eval_batch_size(cfg, batch_size)
    evals = {k: FaceSource(f, batch_size=ebs, device=device) for k, f in held.items()}
    return DataBundle(
        train=train_src,
        evals=evals,
        num_classes=3,
        in_chans=3,
        image_size=(size, size),
        classes=list(AgeGenderNet.stage_names),
        train_size=len(train),
        task=AgeGenderTask(gender_weight=gender_weight, age_weight=age_weight),
        info={
            "name": "utkface",
            "size": size,
            "train": len(train),
            **{k: len(f) for k, f in held.items()},
            "train_mean_age": round(float(train.ages.mean()), 2),
            "train_female": round(float(train.genders.float().mean()), 3),
            "skipped": faces.skipped,
            "warnings": [str(w.message) for w in caught],
        },
    )
