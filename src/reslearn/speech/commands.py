"""Google Speech Commands keyword spotting: the standard 12-class task, a batch source with the
training-time augmentation of Tang & Lin (2018), the classification task, and the download.

Data: Warden, "Speech Commands: A Dataset for Limited-Vocabulary Speech Recognition",
arXiv:1804.03209 (v1 2017: 30 words, v2 2018: 35 words). Layout: ``<word>/<speaker>_nohash_<n>.wav``
(16 kHz, at most 1 s), ``validation_list.txt`` and ``testing_list.txt`` (paths of the held-out
clips; training is everything else), ``_background_noise_/*.wav`` (long noise recordings). Any
folder in that layout works, e.g. the Arabic Speech Commands copy.

The 12-class task (Warden's TensorFlow recipe, used by Tang & Lin 2018 and honk):
10 keywords (yes no up down left right on off stop go), "unknown" (clips of the other words) and
"silence". As in the recipe (``input_data.py``: silence_percentage = unknown_percentage = 10),
each split gets ceil(10% x its keyword clips) unknown clips, drawn from the other words of that
split, and as many silence clips; silence clips are 1 s cuts of the background noise, scaled by
0.1 (honk mixes noise into silence at that volume). Unknown picks and silence cuts are drawn once
from ``seed`` and the split, so a split is the same every time it is loaded.

Augmentation (training only; Tang & Lin 2018, after Warden's recipe): shift each clip in
time by a uniform amount in [-100, 100] ms (zero fill), and with probability 0.8 add a random 1 s
cut of a random background-noise recording at a volume uniform in [0, 0.1]; clip to [-1, 1]. All
draws for a batch come from ``batch_generator(seed, epoch, batch, shard)``: a resumed run
replays them exactly.
"""

from __future__ import annotations

import hashlib
import math
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..data.arrays import keep_random
from ..data.download import extract_tar, fetch
from ..data.source import batch_generator
from ..errors import ReslearnError
from ..models.base import check_choice
from ..tasks import ClassificationTask
from .audio import fit_length, read_wav
from .batching import ShardedOrder, sharding_for
from .features import MFCC, compute_in_chunks, frame_count

__all__ = [
    "CLASSIC_WORDS",
    "ASC_WORDS",
    "SILENCE",
    "UNKNOWN",
    "SPLITS",
    "which_set",
    "URLS",
    "KWSSplit",
    "KWSAugment",
    "KWSSource",
    "KWSTask",
    "load_speech_commands",
    "kws_sources",
    "find_speech_commands",
    "default_words",
    "build_bundle",
    "draw_augmentation",
    "apply_augmentation",
    "download_speech_commands",
]

CLASSIC_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
# The Arabic Speech Commands dataset (Ghandoura et al. 2021; 40 words, same layout) has no
# on/off/go: the other seven classic words and three more of its commands.
ASC_WORDS = ("yes", "no", "up", "down", "left", "right", "stop", "start", "open", "close")
# Folder names searched under the default data roots when data.root is empty, in order.
DEFAULT_FOLDERS = ("speech_commands_v0.01", "speech_commands", "speech-commands", "asc-speech-commands")
SILENCE, UNKNOWN = "_silence_", "_unknown_"
NOISE_FOLDER = "_background_noise_"
SPLITS = ("train", "val", "test")
SAMPLE_RATE = 16000
# honk mixes the background noise into silence clips at this volume.
SILENCE_VOLUME = 0.1

URLS = {
    1: "http://download.tensorflow.org/data/speech_commands_v0.01.tar.gz",
    2: "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
}
# SHA-256 of the archives (as torchaudio's SPEECHCOMMANDS records them).
SHA256 = {
    1: "743935421bb51cccdb6bdd152e04c5c70274e935c82119ad7faeec31780d811d",
    2: "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
}


@dataclass
class KWSSplit:
    """One split held in memory: ``waves`` (N, 16000) float32, ``labels`` (N,) int64 indexing
    ``classes`` (silence, unknown, then the keywords), ``files`` (path relative to the root, or
    ``_silence_/<noise file>@<offset>``), and the background noise for augmentation: all
    recordings concatenated in ``noise`` with ``noise_starts`` / ``noise_lengths``."""

    waves: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    files: list[str]
    noise: torch.Tensor
    noise_starts: torch.Tensor
    noise_lengths: torch.Tensor
    split: str = "train"

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int] | torch.Tensor) -> "KWSSplit":
        """The clips ``indices`` (same classes and background noise)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return KWSSplit(
            waves=self.waves[idx],
            labels=self.labels[idx],
            classes=self.classes,
            files=[self.files[i] for i in idx.tolist()],
            noise=self.noise,
            noise_starts=self.noise_starts,
            noise_lengths=self.noise_lengths,
            split=self.split,
        )

    def class_counts(self) -> dict[str, int]:
        counts = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return dict(zip(self.classes, counts))


def _read_list(root: Path, name: str) -> set[str]:
    path = root / name
    if not path.is_file():
        raise ReslearnError(
            f"{root} is not a Speech Commands folder: {name} is missing (write it: one clip per line as "
            f"<word>/<file>.wav, the clips held out of training; or set data.options.split_by_hash=true to "
            f"split by speaker as Google's which_set does; or download the data set with "
            f"reslearn.speech.commands.download_speech_commands)"
        )
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


_MAX_PER_CLASS = 2**27 - 1  # ~134M; Google's MAX_NUM_WAVS_PER_CLASS


def which_set(rel: str, *, val_percent: float = 10.0, test_percent: float = 10.0) -> str:
    """"train", "val" or "test" for clip ``rel`` by Google's rule for Speech Commands
    (tensorflow/examples/speech_commands/input_data.py, ``which_set``): the SHA-1 of the file name
    less its ``_nohash_*`` suffix (the speaker), as a percentage; so all clips of a speaker land
    in one split, and a split stays put as clips are added. The data set's list files were made
    this way."""
    speaker = re.sub(r"_nohash_.*$", "", Path(rel).name)
    digest = int(hashlib.sha1(speaker.encode()).hexdigest(), 16)
    percent = (digest % (_MAX_PER_CLASS + 1)) * (100.0 / _MAX_PER_CLASS)
    return "val" if percent < val_percent else "test" if percent < val_percent + test_percent else "train"


def _warn_missing(root: Path, listed: set[str]) -> None:
    """Warn (once per message) when the list files name clips that are not there: a partial copy
    of the data set would otherwise give val and test splits far smaller than the lists say."""
    missing = sorted(r for r in listed if not (root / r).is_file())
    if missing:
        warnings.warn(f"{root}: validation_list.txt and testing_list.txt name {len(listed)} clips, {len(missing)} "
                      f"of them missing (first: {missing[0]}); using the {len(listed) - len(missing)} found",
                      stacklevel=3)


def _word_folders(root: Path) -> list[str]:
    return sorted(
        d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "_"))
    )


def _load_noise(root: Path) -> tuple[list[str], list[np.ndarray]]:
    folder = root / NOISE_FOLDER
    files = sorted(folder.glob("*.wav")) if folder.is_dir() else []
    waves = [read_wav(f, sample_rate=SAMPLE_RATE) for f in files]
    keep = [(f.name, w) for f, w in zip(files, waves) if len(w) > SAMPLE_RATE]
    return [k[0] for k in keep], [k[1] for k in keep]


def load_speech_commands(
    root: str | Path,
    *,
    split: str,
    words: Sequence[str] = CLASSIC_WORDS,
    silence_share: float = 0.1,
    unknown_share: float = 0.1,
    seed: int = 0,
    split_by_hash: bool = False,
) -> KWSSplit:
    """Load ``split`` ("train", "val", "test") of the keyword task from a Speech Commands folder.

    Args:
        root: the folder holding ``<word>/`` folders and the two list files.
        words: the keywords (classes 2, 3, ...); every one must have a folder. The other word
            folders supply "unknown".
        silence_share / unknown_share: silence and unknown clips per keyword clip of the split.
        seed: draws the unknown clips and the silence cuts (with the split).
        split_by_hash: assign clips to splits by :func:`which_set` (10% val, 10% test, by
            speaker) instead of the list files, for a folder that has none.
    """
    check_choice("split", split, SPLITS)
    for name, share in (("silence_share", silence_share), ("unknown_share", unknown_share)):
        if not 0 <= share <= 1:
            raise ValueError(f"{name} must be in [0, 1]; got {share!r}")
    words = tuple(words)
    if not words or len(set(words)) != len(words) or any(w in (SILENCE, UNKNOWN) for w in words):
        raise ValueError(f"words must be distinct keyword names; got {words!r}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ReslearnError(f"Speech Commands folder {root} does not exist")
    if not split_by_hash:
        val, test = _read_list(root, "validation_list.txt"), _read_list(root, "testing_list.txt")
        _warn_missing(root, val | test)
    available = _word_folders(root)
    missing = [w for w in words if w not in available]
    if missing:
        raise ReslearnError(
            f"keyword folder(s) {', '.join(missing)} not found in {root}; "
            f"available words: {', '.join(available)}"
        )

    def in_split(rel: str) -> bool:
        if split_by_hash:
            return which_set(rel) == split
        tag = "val" if rel in val else "test" if rel in test else "train"
        return tag == split

    keyword_files: list[tuple[str, int]] = []
    unknown_pool: list[str] = []
    for folder in available:
        rels = sorted(f"{folder}/{f.name}" for f in (root / folder).glob("*.wav"))
        rels = [r for r in rels if in_split(r)]
        if folder in words:
            keyword_files += [(r, 2 + words.index(folder)) for r in rels]
        else:
            unknown_pool += rels
    if not keyword_files:
        raise ReslearnError(f"no clips of {', '.join(words)} in the {split} split of {root}")

    rng = np.random.default_rng([seed, SPLITS.index(split)])
    n_kw = len(keyword_files)
    n_unknown = min(math.ceil(unknown_share * n_kw), len(unknown_pool))
    picks = sorted(rng.choice(len(unknown_pool), size=n_unknown, replace=False).tolist())
    items = keyword_files + [(unknown_pool[i], 1) for i in picks]

    waves = [fit_length(read_wav(root / rel, sample_rate=SAMPLE_RATE), SAMPLE_RATE) for rel, _ in items]
    labels = [label for _, label in items]
    files = [rel for rel, _ in items]

    noise_names, noise = _load_noise(root)
    n_silence = math.ceil(silence_share * n_kw)
    if n_silence and not noise:
        raise ReslearnError(
            f"silence clips need background noise in {root / NOISE_FOLDER} (recordings longer than "
            f"1 s); none found: set data.options.silence_share=0 (no silence class examples)"
        )
    for _ in range(n_silence):
        k = int(rng.integers(len(noise)))
        offset = int(rng.integers(len(noise[k]) - SAMPLE_RATE + 1))
        waves.append(SILENCE_VOLUME * noise[k][offset : offset + SAMPLE_RATE])
        labels.append(0)
        files.append(f"{SILENCE}/{noise_names[k]}@{offset}")

    lengths = [len(n) for n in noise]
    starts = np.cumsum([0, *lengths[:-1]]) if noise else np.zeros(0, dtype=np.int64)
    return KWSSplit(
        waves=torch.from_numpy(np.stack(waves)),
        labels=torch.tensor(labels, dtype=torch.long),
        classes=(SILENCE, UNKNOWN, *words),
        files=files,
        noise=torch.from_numpy(np.concatenate(noise)) if noise else torch.zeros(0),
        noise_starts=torch.as_tensor(starts, dtype=torch.long),
        noise_lengths=torch.tensor(lengths, dtype=torch.long),
        split=split,
    )


@dataclass
class KWSAugment:
    """The random draws for one batch: ``shift`` (samples, content delayed by it), whether noise
    is added, its ``volume`` (0 where not), which recording and where in it."""

    shift: torch.Tensor
    use_noise: torch.Tensor
    volume: torch.Tensor
    noise_index: torch.Tensor
    noise_offset: torch.Tensor


def draw_augmentation(
    n: int,
    generator: torch.Generator,
    *,
    noise_lengths: torch.Tensor,
    length: int = SAMPLE_RATE,
    max_shift: int = SAMPLE_RATE // 10,
    noise_prob: float = 0.8,
    noise_volume: float = 0.1,
) -> KWSAugment:
    """Draw the augmentation of ``n`` clips; ``noise_lengths`` lists the background recordings
    (none: no noise). Defaults: +-100 ms, probability 0.8, volume in [0, 0.1] (Tang & Lin 2018)."""
    dev = generator.device
    shift = torch.randint(-max_shift, max_shift + 1, (n,), generator=generator, device=dev)
    use = torch.rand(n, generator=generator, device=dev) < noise_prob
    volume = torch.rand(n, generator=generator, device=dev) * noise_volume
    k = len(noise_lengths)
    if k == 0:
        use = torch.zeros_like(use)
        index = torch.zeros(n, dtype=torch.long, device=dev)
        offset = torch.zeros(n, dtype=torch.long, device=dev)
    else:
        index = torch.randint(0, k, (n,), generator=generator, device=dev)
        room = (noise_lengths.to(dev)[index] - length + 1).clamp_min(1)
        offset = (torch.rand(n, generator=generator, device=dev) * room).long()
    return KWSAugment(shift, use, volume * use, index, offset)


def apply_augmentation(
    waves: torch.Tensor,
    aug: KWSAugment,
    *,
    noise: torch.Tensor,
    noise_starts: torch.Tensor,
) -> torch.Tensor:
    """Time-shift with zero fill, add the noise cuts at their volumes, clip to [-1, 1]."""
    n, length = waves.shape
    t = torch.arange(length, device=waves.device)
    src = t[None, :] - aug.shift[:, None]
    inside = (src >= 0) & (src < length)
    out = waves.gather(1, src.clamp(0, length - 1)) * inside
    if aug.use_noise.any():
        pos = (noise_starts.to(waves.device)[aug.noise_index] + aug.noise_offset)[:, None] + t
        cuts = noise.to(waves.device)[pos]
        out = out + aug.volume[:, None] * cuts
    return out.clamp(-1.0, 1.0)


class KWSSource:
    """BatchSource of (MFCC (B, 1, 101, 40), labels (B,)) for one split.

    Waveforms live on ``device``; augmentation (``augment=True``) and MFCC run there on whole
    batches. Without augmentation the MFCC of the whole split is computed once and kept
    (``cache_features``, default on for evaluation). Global batches are cut into
    ``world_size * accum_steps`` shards as ``InMemorySource`` does; this rank yields its shards.
    """

    def __init__(
        self,
        data: KWSSplit,
        *,
        batch_size: int,
        augment: bool = False,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
        features: nn.Module | None = None,
        cache_features: bool | None = None,
        time_shift_ms: float = 100.0,
        noise_prob: float = 0.8,
        noise_volume: float = 0.1,
        rank: int = 0,
        world_size: int = 1,
        accum_steps: int = 1,
    ) -> None:
        self.batches = ShardedOrder(
            len(data),
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            seed=seed,
            rank=rank,
            world_size=world_size,
            accum_steps=accum_steps,
        )
        if not 0 <= noise_prob <= 1 or noise_volume < 0 or time_shift_ms < 0:
            raise ValueError(
                "noise_prob must be in [0, 1], noise_volume and time_shift_ms >= 0; got "
                f"{noise_prob!r}, {noise_volume!r}, {time_shift_ms!r}"
            )
        self.data, self.augment, self.seed = data, augment, seed
        self.device = torch.device(device)
        self.features = (features or MFCC()).to(self.device)
        self.max_shift = int(round(time_shift_ms * SAMPLE_RATE / 1000))
        self.noise_prob, self.noise_volume = noise_prob, noise_volume
        self.waves = data.waves.to(self.device)
        self.labels = data.labels.to(self.device)
        self.noise = data.noise.to(self.device)
        self.noise_starts = data.noise_starts.to(self.device)
        self.noise_lengths = data.noise_lengths.to(self.device)
        self.cache_features = (not augment) if cache_features is None else cache_features
        if self.cache_features and augment:
            raise ValueError("cache_features=True needs augment=False (augmented clips change)")
        self._cache: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.batches)

    def _all_features(self) -> torch.Tensor:
        if self._cache is None:
            self._cache = compute_in_chunks(self.features, self.waves)
        return self._cache

    def iter_epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for b, shard, idx in self.batches.shards(epoch, start):
            idx = idx.to(self.device)
            if self.cache_features:
                x = self._all_features().index_select(0, idx)
            else:
                waves = self.waves.index_select(0, idx)
                if self.augment:
                    g = batch_generator(self.seed, epoch, b, self.device, shard)
                    aug = draw_augmentation(
                        len(idx),
                        g,
                        noise_lengths=self.noise_lengths,
                        max_shift=self.max_shift,
                        noise_prob=self.noise_prob,
                        noise_volume=self.noise_volume,
                    )
                    waves = apply_augmentation(
                        waves, aug, noise=self.noise, noise_starts=self.noise_starts
                    )
                with torch.no_grad():
                    x = self.features(waves)
            yield x, self.labels.index_select(0, idx)


def find_speech_commands(root: str | Path = "") -> Path:
    """``root`` itself, or the first Speech Commands folder (``testing_list.txt`` inside) named
    one of ``DEFAULT_FOLDERS`` under the default data roots (Google's copy before the Arabic)."""
    if root:
        return Path(root).expanduser()
    from ..data.bundle import default_data_roots

    roots = default_data_roots()
    for folder in (r / name for r in roots for name in DEFAULT_FOLDERS):
        if (folder / "testing_list.txt").is_file():
            return folder
    raise ReslearnError(
        f"no Speech Commands folder ({', '.join(DEFAULT_FOLDERS)}) in {', '.join(map(str, roots))}; "
        f"set data.root=DIR (download with reslearn.speech.commands.download_speech_commands)"
    )


def default_words(root: str | Path) -> tuple[str, ...]:
    """The classic ten keywords where the folder has them (Google's copy), else ``ASC_WORDS``
    where it has those (the Arabic copy lacks on/off/go), else the classic ten (loading then
    names the missing folders)."""
    available = set(_word_folders(Path(root))) if Path(root).is_dir() else set()
    return next((w for w in (CLASSIC_WORDS, ASC_WORDS) if set(w) <= available), CLASSIC_WORDS)


def kws_sources(
    root: str | Path,
    *,
    batch_size: int,
    words: Sequence[str] = CLASSIC_WORDS,
    eval_batch_size: int | None = None,
    seed: int = 0,
    split_seed: int | None = None,
    splits: Sequence[str] = SPLITS,
    train_subset: int = 0,
    eval_subset: int = 0,
    augment: bool = True,
    silence_share: float = 0.1,
    unknown_share: float = 0.1,
    time_shift_ms: float = 100.0,
    noise_prob: float = 0.8,
    noise_volume: float = 0.1,
    split_by_hash: bool = False,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    accum_steps: int = 1,
) -> dict[str, KWSSource]:
    """Sources of the 12-class task for ``splits``: "train" (shuffled, augmented unless
    ``augment=False``) and "val" / "test" (in order, cached MFCC). ``split_seed`` (default
    ``seed``) draws the unknown and silence clips and the ``train_subset`` / ``eval_subset``
    clips (0 = all); ``seed`` the training order and augmentation."""
    split_seed = seed if split_seed is None else split_seed
    out = {}
    for split in splits:
        train = split == "train"
        data = load_speech_commands(
            root, split=split, words=words, silence_share=silence_share,
            unknown_share=unknown_share, seed=split_seed, split_by_hash=split_by_hash,
        )
        data = keep_random(data, train_subset if train else eval_subset, seed=split_seed)
        out[split] = KWSSource(
            data,
            batch_size=batch_size if train else (eval_batch_size or batch_size),
            augment=train and augment,
            shuffle=train,
            drop_last=train and len(data) >= batch_size,
            seed=seed,
            device=device,
            time_shift_ms=time_shift_ms,
            noise_prob=noise_prob,
            noise_volume=noise_volume,
            **sharding_for(train, rank=rank, world_size=world_size, accum_steps=accum_steps),
        )
    return out


def source_options(cfg, **options) -> dict:
    """``kws_sources`` arguments from a ``DataConfig`` and its ``options`` (the builder's)."""
    if cfg.val_size:
        raise ReslearnError(
            "speech-commands has its own validation split (validation_list.txt); leave data.val_size at 0"
        )
    root = find_speech_commands(cfg.root)
    words = options.pop("words", None)
    return dict(
        root=root,
        words=tuple(words) if words else default_words(root),
        split_seed=cfg.split_seed,
        train_subset=cfg.train_subset,
        eval_subset=cfg.test_subset,
        augment=cfg.augment == "standard",
        **options,
    )


def build_bundle(
    cfg,
    *,
    batch_size: int,
    seed: int,
    device: torch.device | str,
    rank: int,
    world_size: int,
    accum_steps: int,
    words: Sequence[str] | None = None,
    silence_share: float = 0.1,
    unknown_share: float = 0.1,
    time_shift_ms: float = 100.0,
    noise_prob: float = 0.8,
    noise_volume: float = 0.1,
    eval_splits: Sequence[str] = ("val", "test"),
    split_by_hash: bool = False,
):
    """The engine's ``DataBundle`` for ``data.name: speech-commands`` (``engine.data.APP_DATA``).

    ``data.root`` (or the first default folder, ``find_speech_commands``); ``words`` (default:
    ``default_words``); ``data.split_seed`` draws unknown/silence clips and the subsets,
    ``data.train_subset`` / ``data.test_subset`` (val and test) take random subsets;
    ``data.augment: none`` turns the time shift and noise off (and caches the training MFCC).
    ``eval_splits``: the splits evaluated during training (e.g. ``[test]`` to save time).
    ``split_by_hash``: splits by :func:`which_set` instead of the list files.
    """
    from ..data.bundle import DataBundle, eval_batch_size

    if not eval_splits or not set(eval_splits) <= {"val", "test"}:
        raise ValueError(f"eval_splits must name val and/or test; got {list(eval_splits)!r}")
    opts = source_options(
        cfg, words=words, silence_share=silence_share, unknown_share=unknown_share,
        time_shift_ms=time_shift_ms, noise_prob=noise_prob, noise_volume=noise_volume,
        eval_batch_size=eval_batch_size(cfg, batch_size), split_by_hash=split_by_hash,
    )
    srcs = kws_sources(
        batch_size=batch_size, splits=("train", *eval_splits), seed=seed, device=device,
        rank=rank, world_size=world_size, accum_steps=accum_steps, **opts,
    )
    train = srcs.pop("train")
    classes = list(train.data.classes)
    sizes = {k: len(s.data) for k, s in [("train", train), *srcs.items()]}
    return DataBundle(
        train=train,
        evals=srcs,
        num_classes=len(classes),
        in_chans=1,
        image_size=(frame_count(SAMPLE_RATE, train.features.hop_length), train.features.n_mfcc),
        classes=classes,
        train_size=sizes["train"],
        info={"name": "speech-commands", "root": str(opts["root"]), "words": list(opts["words"]), **sizes},
        task=KWSTask(),
    )


class KWSTask(ClassificationTask):
    """Softmax cross-entropy over the 12 classes; evaluation adds ``accuracy`` (percent), the
    figure Tang & Lin report (Table 2); ``primary`` stays ``top1_err`` = 100 - accuracy."""

    primary = "top1_err"

    @torch.no_grad()
    def evaluate(self, model: nn.Module, source) -> dict[str, float]:
        metrics = super().evaluate(model, source)
        metrics["accuracy"] = 100.0 - metrics["top1_err"]
        return metrics

    @staticmethod
    @torch.no_grad()
    def posteriors(model: nn.Module, source) -> tuple[torch.Tensor, torch.Tensor]:
        """Softmax posteriors (N, classes) and labels (N,) over one pass of ``source``, on the
        CPU, for ``reslearn.speech.metrics.average_roc``."""
        probs, labels = [], []
        for x, y in source.iter_epoch(0):
            probs.append(model(x).float().softmax(-1).cpu())
            labels.append(y.cpu())
        return torch.cat(probs), torch.cat(labels)


def download_speech_commands(
    root: str | Path, *, version: int = 1, url: str | None = None, sha256: str | None = None
) -> Path:
    """Download and unpack Google Speech Commands ``version`` (1 or 2) into ``root``; returns
    ``root``. Atomic: the archive goes to a temporary file that is checked (SHA-256, known for
    the official archives) and unpacked into a temporary folder renamed into place, so an
    interrupted download leaves nothing half-written. A folder that already has
    ``testing_list.txt`` is left as it is."""
    check_choice("version", version, tuple(URLS))
    root = Path(root).expanduser()
    if (root / "testing_list.txt").is_file():
        return root
    if root.exists() and any(root.iterdir()):
        raise ReslearnError(f"{root} exists and is not empty; give an empty or new folder")
    url = url or URLS[version]
    expected = sha256 if sha256 is not None else (SHA256[version] if url == URLS[version] else None)
    root.parent.mkdir(parents=True, exist_ok=True)

    def check(folder: Path) -> None:
        if not (folder / "testing_list.txt").is_file():
            raise ReslearnError(f"{url} is not a Speech Commands archive (no testing_list.txt)")

    with tempfile.TemporaryDirectory(dir=root.parent, prefix=".reslearn-gsc-") as tmp:
        archive = Path(tmp) / "archive.tar.gz"
        fetch(url, archive, digest=expected, algorithm="sha256")
        extract_tar(archive, root, check=check)
    return root
