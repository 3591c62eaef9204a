"""Steganalysis data, embedding and metrics for DRN (Wu, Zhong, Liu, "Deep residual learning for
image steganalysis", Multimedia Tools and Applications 2018, doi:10.1007/s11042-017-4440-4).

* Covers: any folder of images (converted to 8-bit grayscale), or arrays (CIFAR-10, UTKFace,
  ...), as :class:`CoverSet`.
* Stego twins: made here by LSB matching (+-1 embedding) at a payload in bits per pixel, seeded
  per image from its name so every run makes the same stego image; or read from a folder of
  ready-made stego images carrying the covers' file names (from any embedder, e.g. S-UNIWARD).
* :class:`StegoPairs` keeps each cover with its twin; splits are drawn over pairs, so a cover and
  its stego image are always on the same side. :class:`StegoPairSource` (a ``BatchSource``)
  yields them interleaved in the same batch, labels 0 (cover) and 1 (stego), the pairing that
  CNN steganalysers train with (cover and stego in one mini-batch).
* Metric: the detection error P_E = min over thresholds of (P_FA + P_MD) / 2 (the minimal total
  error under equal priors, the figure steganalysis papers report), and accuracy;
  :class:`StegoTask` is the engine's ``Task``.

LSB matching (also called +-1 embedding): for each message bit, a pixel on a pseudo-random path
whose least significant bit differs from the bit is changed by +1 or -1 at random, except 0
(only +1) and 255 (only -1); a pixel whose LSB already equals the bit is left alone. At payload
``p`` bits per pixel about half of the ``p * n`` visited pixels already match, so the expected
fraction of changed pixels is ``p / 2`` (Ker, "Steganalysis of LSB matching in grayscale
images", IEEE Signal Processing Letters 2005).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.source import InMemorySource
from ..errors import ReslearnError
from ..tasks import ClassificationTask

__all__ = [
    "IMAGE_SUFFIXES",
    "CoverSet",
    "StegoPairs",
    "StegoPairSource",
    "StegoTask",
    "build_bundle",
    "covers_from_array",
    "detection_error",
    "embedding_path",
    "image_seed",
    "load_cover_folder",
    "load_stego_folder",
    "lsb_extract",
    "lsb_matching",
    "make_stego",
    "pair_dihedral",
    "rgb_to_gray",
]

IMAGE_SUFFIXES = (".png", ".pgm", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")


# ----------------------------------------------------------------------------------- covers


@dataclass
class CoverSet:
    """Grayscale cover images and their names (the per-image embedding seeds derive from them).

    Attributes:
        images: uint8 (N, H, W).
        names: N unique names (relative file paths, or ``"<prefix>/<index>"`` for arrays).
        sizes: each file's (H, W) before a center crop (None: ``images``' own), so ready-made
            stego images are checked against the size of the file they were made from.
    """

    images: np.ndarray
    names: list[str]
    sizes: list[tuple[int, int]] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 3:
            raise ValueError(f"cover images must be uint8 (N, H, W); got {self.images.dtype} {self.images.shape}")
        if len(self.names) != len(self.images):
            raise ValueError(f"{len(self.images)} covers but {len(self.names)} names")
        if len(set(self.names)) != len(self.names):
            raise ValueError("cover names must be unique (they seed the embedding)")

    def __len__(self) -> int:
        return len(self.names)


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of uint8 RGB in the last axis, rounded exactly as Pillow's
    ``convert("L")`` does, so array and file covers of the same image agree bit for bit."""
    a = rgb.astype(np.int64)
    return ((a[..., 0] * 19595 + a[..., 1] * 38470 + a[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


def _center_crop(img: np.ndarray, size: int | tuple[int, int], name: str) -> np.ndarray:
    th, tw = (size, size) if isinstance(size, int) else size
    h, w = img.shape[-2:]
    if h < th or w < tw:
        raise ReslearnError(f"image {name} is {h}x{w}, smaller than the crop size {th}x{tw}")
    top, left = (h - th) // 2, (w - tw) // 2
    return img[..., top : top + th, left : left + tw]


def covers_from_array(
    images: np.ndarray | torch.Tensor,
    *,
    names: Sequence[str] | None = None,
    prefix: str = "img",
    size: int | None = None,
) -> CoverSet:
    """Covers from a uint8 array: (N, H, W), (N, 1, H, W), (N, 3, H, W) (e.g. CIFAR-10's
    ``ArrayDataset.images``) or (N, H, W, 3). RGB becomes grayscale with :func:`rgb_to_gray`;
    ``size`` center-crops (cropping, not resampling, keeps the sensor noise that steganalysis
    measures). Names default to ``"<prefix>/<index>"``."""
    a = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if a.dtype != np.uint8:
        raise ValueError(f"images must be uint8; got {a.dtype}")
    if a.ndim == 4 and a.shape[1] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a[:, 0] if a.shape[1] == 1 else rgb_to_gray(np.moveaxis(a, 1, -1))
    elif a.ndim == 4 and a.shape[-1] in (1, 3):
        a = a[..., 0] if a.shape[-1] == 1 else rgb_to_gray(a)
    elif a.ndim != 3:
        raise ValueError(f"images must be (N, H, W), (N, C, H, W) or (N, H, W, C); got {a.shape}")
    if size is not None:
        a = _center_crop(a, size, prefix)
    names = list(names) if names is not None else [f"{prefix}/{i}" for i in range(len(a))]
    return CoverSet(np.ascontiguousarray(a), names)


def _image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_gray(path: Path) -> np.ndarray:
    """8-bit grayscale by the decoder training and predict use (16-bit scaled, Pillow's pixel
    limit; :func:`reslearn.data.folder.decode_image`), ``convert("L")`` for colour."""
    from ..data.folder import decode_image

    try:
        return decode_image(path, channels=1)[0].numpy()
    except OSError as e:
        raise ReslearnError(f"cannot read image {path}: {e}") from None


def load_cover_folder(root: str | Path, *, size: int | None = None, limit: int | None = None) -> CoverSet:
    """Every image under ``root`` (recursively, sorted by path) as an 8-bit grayscale cover.

    Args:
        size: center-crop every cover to ``size`` x ``size``; without it all images must have
            the same size.
        limit: take only the first ``limit`` files (sorted by path).
    """
    root = Path(root)
    if not root.is_dir():
        raise ReslearnError(f"cover folder {root} does not exist")
    files = _image_files(root)[:limit]
    if not files:
        raise ReslearnError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    imgs, sizes = [], []
    for f in files:
        g = _read_gray(f)
        sizes.append(g.shape)
        imgs.append(_center_crop(g, size, str(f)) if size is not None else g)
    shapes = {g.shape for g in imgs}
    if len(shapes) > 1:
        raise ReslearnError(f"covers under {root} differ in size ({sorted(shapes)[:3]}...); pass size= to crop")
    return CoverSet(np.stack(imgs), [f.relative_to(root).as_posix() for f in files], sizes)


# -------------------------------------------------------------------------------- embedding


def image_seed(name: str, seed: int = 0) -> int:
    """A 63-bit seed from an image's name and a global seed: stable across runs, machines and
    Python versions (unlike ``hash``), and different for every image."""
    digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _check_payload(payload: float) -> float:
    if not isinstance(payload, (int, float)) or not 0.0 < payload <= 1.0:
        raise ValueError(f"payload must be in (0, 1] bits per pixel; got {payload!r}")
    return float(payload)


def _path(n: int, payload: float, seed: int) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    m = int(round(_check_payload(payload) * n))
    positions = rng.permutation(n)[:m]
    bits = rng.integers(0, 2, size=m, dtype=np.uint8)
    return rng, positions, bits


def embedding_path(shape: tuple[int, ...], *, payload: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The key-dependent path shared by embedder and receiver: ``round(payload * n)`` distinct
    pixel positions (flat indices, a seeded permutation) and the message bits (uniform, standing
    in for an encrypted message)."""
    _, positions, bits = _path(int(np.prod(shape)), payload, seed)
    return positions, bits


def lsb_matching(cover: np.ndarray, *, payload: float, seed: int) -> np.ndarray:
    """The LSB-matching stego twin of one uint8 ``cover`` at ``payload`` bits per pixel."""
    if cover.dtype != np.uint8:
        raise ValueError(f"cover must be uint8; got {cover.dtype}")
    flat = cover.reshape(-1).astype(np.int16)
    rng, positions, bits = _path(flat.size, payload, seed)
    values = flat[positions]
    change = (values & 1) != bits
    pos, v = positions[change], values[change]
    step = np.where(rng.integers(0, 2, size=pos.size) == 1, 1, -1).astype(np.int16)
    # 0 - 1 and 255 + 1 would leave the 8-bit range; the only change that keeps it flips the LSB
    # the other way, which LSB matching allows (either direction fixes the bit).
    step[v == 0] = 1
    step[v == 255] = -1
    flat[pos] = v + step
    return flat.astype(np.uint8).reshape(cover.shape)


def lsb_extract(stego: np.ndarray, *, payload: float, seed: int) -> np.ndarray:
    """The receiver's side: the message bits read back from the LSBs on the path."""
    positions, _ = embedding_path(stego.shape, payload=payload, seed=seed)
    return (stego.reshape(-1)[positions] & 1).astype(np.uint8)


def make_stego(covers: CoverSet, *, payload: float, seed: int = 0) -> np.ndarray:
    """Stego twins of all ``covers`` (uint8, same shape), image ``i`` seeded by
    ``image_seed(covers.names[i], seed)``."""
    _check_payload(payload)
    return np.stack([
        lsb_matching(img, payload=payload, seed=image_seed(name, seed))
        for img, name in zip(covers.images, covers.names)
    ])


def load_stego_folder(root: str | Path, covers: CoverSet) -> np.ndarray:
    """Ready-made stego images under ``root`` for ``covers``, matched by the covers' names: the
    same relative path, or the same path with another image suffix (``a.pgm`` for ``a.jpg``).

    An embedder changes pixel values, never the size: a stego image of another size than its
    cover file (resized, another image) or identical to its cover (nothing embedded, the cover
    folder given twice) is a ``ReslearnError`` naming the pair."""
    root = Path(root)
    if not root.is_dir():
        raise ReslearnError(f"stego folder {root} does not exist")
    out, missing = [], []
    for i, (name, cover) in enumerate(zip(covers.names, covers.images)):
        path = root / name
        if not path.is_file():
            alts = [path.with_suffix(s) for s in IMAGE_SUFFIXES] + [path.with_suffix(s.upper()) for s in IMAGE_SUFFIXES]
            path = next((p for p in alts if p.is_file()), path)
        if not path.is_file():
            missing.append(name)
            continue
        g = _read_gray(path)
        want = tuple(covers.sizes[i]) if covers.sizes else cover.shape
        if g.shape != want:
            raise ReslearnError(f"stego image {path} is {g.shape[0]}x{g.shape[1]} but its cover {name} is "
                                f"{want[0]}x{want[1]}: not a cover/stego pair (resized, or another image?)")
        if g.shape != cover.shape:
            # Covers center-cropped at load time (`size=`): crop the stego image the same way.
            g = _center_crop(g, cover.shape, str(path))
        if np.array_equal(g, cover):
            raise ReslearnError(f"stego image {path} is identical to its cover {name}: nothing embedded "
                                f"(is the stego folder the cover folder?)")
        out.append(g)
    if missing:
        raise ReslearnError(
            f"stego folder {root} lacks {len(missing)} of {len(covers)} covers' images (first: {missing[0]})"
        )
    return np.stack(out)


# ------------------------------------------------------------------------------------ pairs


@dataclass
class StegoPairs:
    """Covers with their stego twins; index ``i`` of ``covers`` and ``stegos`` is one pair.

    Attributes:
        covers, stegos: uint8 (N, H, W).
        names: the covers' names.
    """

    covers: np.ndarray
    stegos: np.ndarray
    names: list[str]

    def __post_init__(self) -> None:
        if self.covers.shape != self.stegos.shape or self.covers.ndim != 3:
            raise ValueError(f"covers {self.covers.shape} and stegos {self.stegos.shape} must both be (N, H, W)")
        if self.covers.dtype != np.uint8 or self.stegos.dtype != np.uint8:
            raise ValueError("covers and stegos must be uint8")
        if len(self.names) != len(self.covers):
            raise ValueError(f"{len(self.covers)} pairs but {len(self.names)} names")

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def embed(cls, covers: CoverSet, *, payload: float, seed: int = 0) -> StegoPairs:
        """Pairs with stego twins made by LSB matching (:func:`make_stego`)."""
        return cls(covers.images, make_stego(covers, payload=payload, seed=seed), list(covers.names))

    @classmethod
    def from_folder(cls, covers: CoverSet, stego_root: str | Path) -> StegoPairs:
        """Pairs with ready-made stego images (:func:`load_stego_folder`)."""
        return cls(covers.images, load_stego_folder(stego_root, covers), list(covers.names))

    def subset(self, index: Sequence[int] | np.ndarray) -> StegoPairs:
        index = np.asarray(index, dtype=np.int64)
        return StegoPairs(self.covers[index], self.stegos[index], [self.names[i] for i in index])

    def split(self, *, test_fraction: float, seed: int = 0) -> tuple[StegoPairs, StegoPairs]:
        """(train, test) drawn over *pairs* with a seeded permutation: a cover and its stego
        image never land on different sides. Both parts keep the original order."""
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction!r}")
        n = len(self)
        n_test = int(round(test_fraction * n))
        if not 0 < n_test < n:
            raise ValueError(f"test_fraction {test_fraction} leaves an empty side for {n} pairs")
        perm = np.random.default_rng(seed).permutation(n)
        return self.subset(np.sort(perm[n_test:])), self.subset(np.sort(perm[:n_test]))


def pair_dihedral(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One of the 8 rotations/flips per sample of a uint8 (B, C, H, W) batch, the same for all C
    channels, i.e. for a cover and its stego twin (stacked as channels). These transforms move
    pixels without resampling, so the embedding changes survive exactly (the augmentation of
    Ye, Ni, Yi, IEEE TIFS 2017, and Boroumand et al., SRNet, TIFS 2019). Non-square images get
    flips only."""
    b = x.shape[0]
    turns = 4 if x.shape[-1] == x.shape[-2] else 1
    k = torch.randint(0, turns, (b,), generator=g, device=g.device).to(x.device)
    flip = torch.randint(0, 2, (b,), generator=g, device=g.device).to(x.device).bool()
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    out = x.clone()
    for r in range(1, turns):
        sel = (k == r).nonzero().flatten()
        if len(sel):
            out[sel] = torch.rot90(x[sel], r, (-2, -1))
    return out


def _as_float(x: torch.Tensor) -> torch.Tensor:
    # Raw pixel values: the KV filter is zero-sum and BN follows the first convolution, so no
    # mean/std normalisation is needed (or meaningful for noise residuals).
    return x.float()


class StegoPairSource:
    """A ``BatchSource`` of cover/stego pairs: every batch holds whole pairs, interleaved
    ``[cover_0, stego_0, cover_1, stego_1, ...]`` as float (2B, 1, H, W) raw pixel values, labels
    ``[0, 1, 0, 1, ...]``. Shuffling, resumption and DDP sharding act on pairs (it wraps an
    ``InMemorySource`` of (N, 2, H, W) pair tensors).

    Args:
        pairs: the pairs.
        batch_size: images per batch (even: ``batch_size // 2`` pairs).
        augment: apply :func:`pair_dihedral` (same transform to both images of a pair).
        shuffle, drop_last, seed, device, rank, world_size: as ``InMemorySource``.
    """

    def __init__(
        self,
        pairs: StegoPairs,
        *,
        batch_size: int,
        augment: bool = False,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
        **shard: Any,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 2 or batch_size % 2:
            raise ValueError(f"batch_size must be an even integer >= 2 (whole pairs); got {batch_size!r}")
        stacked = torch.from_numpy(np.stack([pairs.covers, pairs.stegos], axis=1))
        self.pairs = pairs
        self._inner = InMemorySource(
            stacked,
            torch.zeros(len(pairs), dtype=torch.long),
            batch_size=batch_size // 2,
            normalize=_as_float,
            augment=pair_dihedral if augment else None,
            shuffle=shuffle,
            drop_last=drop_last,
            seed=seed,
            device=device,
            **shard,
        )
        self.device = self._inner.device

    def __len__(self) -> int:
        return len(self._inner)

    def iter_epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, _ in self._inner.iter_epoch(epoch, start):
            b, _, h, w = x.shape
            # (B, 2, H, W) -> (2B, 1, H, W) puts each stego image right after its cover.
            y = torch.tensor([0, 1], device=x.device).repeat(b)
            yield x.reshape(2 * b, 1, h, w), y


# ---------------------------------------------------------------------------------- metrics


def detection_error(scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> float:
    """P_E = min over thresholds t of (P_FA(t) + P_MD(t)) / 2 for the rule "stego if score >= t".

    ``scores``: higher means more likely stego; ``labels``: 0 cover, 1 stego (both present).
    P_FA is the fraction of covers called stego, P_MD the fraction of stego images called cover.
    Every distinct score (and +inf) is tried, so the minimum is exact; P_E <= 0.5 always (the
    rule that calls everything cover, or everything stego, scores 0.5).
    """
    s = torch.as_tensor(scores, dtype=torch.float64).flatten().cpu()
    y = torch.as_tensor(labels).flatten().cpu()
    if len(s) != len(y):
        raise ValueError(f"{len(s)} scores but {len(y)} labels")
    cover, stego = s[y == 0].sort().values, s[y == 1].sort().values
    if not len(cover) or not len(stego):
        raise ValueError("detection_error needs both cover (0) and stego (1) samples")
    t = torch.cat([s.unique(), torch.tensor([float("inf")], dtype=torch.float64)])
    p_fa = 1.0 - torch.searchsorted(cover, t, side="left").double() / len(cover)  # covers >= t
    p_md = torch.searchsorted(stego, t, side="left").double() / len(stego)  # stegos < t
    return float(((p_fa + p_md) / 2).min())


class StegoTask(ClassificationTask):
    """Cover/stego classification with a two-way softmax (Wu et al. 2018): the classification
    loss; ``evaluate`` reports the detection error ``pe`` (percent; the primary metric, lower is
    better), accuracy ``acc`` (percent, argmax) and the cross-entropy. The stego score is the
    logit difference ``z_stego - z_cover``, the log-odds under the softmax."""

    primary = "pe"
    # The engine's running training error: the argmax error of the training batches (P_E needs
    # a threshold sweep over a whole set, which only ``evaluate`` does).
    train_error_keys = ("top1_err", "n")

    @torch.no_grad()
    def evaluate(self, model: nn.Module, source: Any) -> dict[str, float]:
        scores, labels, tot_loss, right = [], [], 0.0, 0
        for x, y in source.iter_epoch(0):
            logits = model(x).float()
            tot_loss += float(F.cross_entropy(logits, y, reduction="sum"))
            right += int((logits.argmax(-1) == y).sum())
            scores.append((logits[:, 1] - logits[:, 0]).cpu())
            labels.append(y.cpu())
        n = sum(len(y) for y in labels)
        if n == 0:
            raise ReslearnError("the evaluation source yielded no batches")
        pe = detection_error(torch.cat(scores), torch.cat(labels))
        return {"loss": tot_loss / n, "pe": 100.0 * pe, "acc": 100.0 * right / n, "n": n}


# ------------------------------------------------------------------------------ engine glue


def load_covers(source: str, *, root: str = "", size: int = 0, limit: int = 0, cache_dir: str = "") -> CoverSet:
    """Grayscale covers by name: ``"cifar10"`` (the 50k training then the 10k test images of
    CIFAR-10, converted with :func:`rgb_to_gray`, names ``cifar10/train/<i>``/``cifar10/test/<i>``;
    ``root`` or the default data roots hold ``cifar-10-batches-py``), ``"utkface"`` (the aligned
    UTKFace crops, ``root`` as :func:`reslearn.apps.faces.utkface_root`) or a folder of images.

    Args:
        size: 0 keeps the native size. CIFAR-10 and folders: center crop (no resampling).
            UTKFace: the side its 200x200 crops are decoded to (antialiased resize, as
            :func:`reslearn.apps.faces.load_utkface`), since the crops are too big for CPU budgets.
        limit: the first ``limit`` covers (0 = all); UTKFace takes a seeded random subset.
        cache_dir: UTKFace only: where decoded faces are cached (as
            :func:`reslearn.apps.faces.utkface_cache_dir`).
    """
    from ..config import DataConfig
    from ..data.bundle import default_data_roots, resolve_root

    if not isinstance(limit, int) or limit < 0 or not isinstance(size, int) or size < 0:
        raise ValueError(f"limit and size must be integers >= 0; got limit={limit!r} size={size!r}")
    if source == "cifar10":
        from ..data.cifar import load_cifar

        where = resolve_root(DataConfig(name="cifar10", root=root))
        if where is None:
            raise ReslearnError(
                f"CIFAR-10 covers not found in {', '.join(map(str, default_data_roots()))}; set data.root=DIR"
            )
        parts, names = [], []
        for split in ("train", "test"):
            if limit and sum(len(p) for p in parts) >= limit:
                break
            imgs = load_cifar(where, name="cifar10", train=split == "train").images
            parts.append(imgs)
            names += [f"cifar10/{split}/{i}" for i in range(len(imgs))]
        images = torch.cat(parts)
        if limit:
            images, names = images[:limit], names[:limit]
        return covers_from_array(images, names=names, size=size or None)
    if source == "utkface":
        import warnings

        from .faces import load_utkface, utkface_cache_dir, utkface_root

        where = utkface_root(root)
        with warnings.catch_warnings():  # the two unusable names of crop_part1 do not matter here
            warnings.simplefilter("ignore")
            faces = load_utkface(where, size=size or 200, limit=limit or None,
                                 cache_dir=utkface_cache_dir(cache_dir, where))
        return covers_from_array(faces.images, names=faces.names)
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise ReslearnError(f"cover_source must be 'cifar10', 'utkface' or a folder of images; {source!r} is none")
    return load_cover_folder(folder, size=size or None, limit=limit or None)


def build_bundle(
    cfg: Any,
    *,
    batch_size: int,
    seed: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    accum_steps: int = 1,
    cover_source: str = "cifar10",
    payload: float = 0.4,
    limit: int = 0,
    size: int = 0,
    stego_root: str = "",
    embed_seed: int = 0,
    cache_dir: str = "",
) -> Any:
    """The engine's ``data.name: stego``: cover/stego pairs split over pairs into train / (val) /
    test, with :class:`StegoTask`. ``batch_size`` counts images (a batch holds
    ``batch_size // 2`` whole pairs).

    Splits, in the shared ``data.*`` fields, counted in pairs: ``data.test_size`` and
    ``data.val_size`` (a share of all pairs or a count) are held out by ``data.split_seed``;
    ``data.train_subset`` / ``data.test_subset`` then keep a fixed random number of the training /
    each held-out split's pairs; ``data.eval_batch_size`` counts images (rounded up to whole pairs).

    Options (``data.options``):
        cover_source: ``"cifar10"``, ``"utkface"`` or a folder (see :func:`load_covers`);
            ``data.root`` locates CIFAR-10 / UTKFace.
        payload: bits per pixel of the LSB-matching embedding (ignored with ``stego_root``).
        limit: number of covers (0 = all); size: see :func:`load_covers`.
        stego_root: a folder of ready-made stego images named as the covers (folder covers).
        embed_seed: global seed of the per-image embedding keys (:func:`image_seed`).
        cache_dir: decoded UTKFace covers are cached there (``"auto"``: beside the data).

    ``data.augment: standard`` applies :func:`pair_dihedral` to training pairs; ``none`` does not.
    """
    from ..data.bundle import DataBundle, eval_batch_size
    from .common import cut_splits, held_out_shares

    covers = load_covers(cover_source, root=cfg.root, size=size, limit=limit, cache_dir=cache_dir)
    test_share, val_share = held_out_shares(cfg, len(covers), what="pairs")
    if stego_root:
        pairs = StegoPairs.from_folder(covers, Path(stego_root).expanduser())
    else:
        pairs = StegoPairs.embed(covers, payload=payload, seed=embed_seed)
    train, test = pairs.split(test_fraction=test_share + val_share, seed=cfg.split_seed)
    held = {"test": test}
    if val_share:
        val, test = test.split(test_fraction=test_share / (test_share + val_share), seed=cfg.split_seed)
        held = {"val": val, "test": test}
    train, held = cut_splits(cfg, train, held)
    if 2 * len(train) < batch_size:
        raise ReslearnError(f"{len(train)} training pairs are fewer than one batch of {batch_size} images")
    ebs = eval_batch_size(cfg, batch_size)
    ebs += ebs % 2
    train_src = StegoPairSource(
        train, batch_size=batch_size, augment=cfg.augment == "standard", shuffle=True, drop_last=True,
        seed=seed, device=device, rank=rank, world_size=world_size, accum_steps=accum_steps,
    )
    evals = {k: StegoPairSource(p, batch_size=ebs, device=device) for k, p in held.items()}
    h, w = covers.images.shape[1:]
    return DataBundle(
        train=train_src,
        evals=evals,
        num_classes=2,
        in_chans=1,
        image_size=(h, w),
        classes=["cover", "stego"],
        train_size=2 * len(train),
        task=StegoTask(),
        info={
            "name": "stego",
            "cover_source": cover_source,
            "embedding": f"ready-made ({stego_root})" if stego_root else f"LSB matching {payload} bpp",
            "train_pairs": len(train),
            **{f"{k}_pairs": len(p) for k, p in held.items()},
        },
    )
