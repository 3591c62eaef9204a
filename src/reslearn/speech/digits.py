"""Connected-digit recognition from isolated digit recordings: a small, real CTC task for the WRBN
(Heymann, Drude & Haeb-Umbach 2016) that trains on a CPU.

Any folder of per-digit clips named ``<digit>_<speaker>_<index>.wav`` works; the Free Spoken Digit
Dataset (FSDD: 3,000 English clips, 6 speakers, 8 kHz) uses that naming. A digit string joins 1-7
clips of one speaker with short random pauses (also before the first and after the last digit);
its label is the word sequence ("three", "one", ...). Speakers are split between train and
test (and optionally validation), so the test measures speaker-independent recognition. Strings
are drawn once from ``seed`` and stored as (clip ids, pauses); waveforms are put together per
batch.

The batch source yields ``((features, feature_lengths), (targets, target_lengths))``: log-mel
features (B, 1, 80, T) zero-padded in time, CTC targets (B, S) padded with 0 holding class ids
digit + 1 (0 is the CTC blank), ready for ``reslearn.speech.ctc.CTCTask``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..errors import ReslearnError
from ..models.base import check_positive
from .audio import read_wav
from .batching import ShardedOrder, sharding_for
from .features import LogMel

__all__ = [
    "DIGIT_WORDS",
    "BLANK",
    "DigitRecordings",
    "DigitStrings",
    "DigitSource",
    "load_digit_recordings",
    "split_speakers",
    "build_digit_strings",
    "digit_vocabulary",
    "digit_sources",
    "find_digit_folder",
    "log_mel_frames",
    "build_bundle",
]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
BLANK = 0  # CTC blank; digit d is class d + 1
_NAME = re.compile(r"^(\d)_([^_]+)_(\d+)\.wav$")


def digit_vocabulary() -> tuple[str, ...]:
    """Class names of the CTC output: blank, then the ten digit words (11 classes)."""
    return ("<blank>", *DIGIT_WORDS)


@dataclass
class DigitRecordings:
    """Isolated digit clips: ``waves[i]`` (1-D float32), ``digits[i]``, ``speakers[i]``."""

    waves: list[torch.Tensor]
    digits: list[int]
    speakers: list[str]
    names: list[str]
    sample_rate: int

    def __len__(self) -> int:
        return len(self.waves)

    def speaker_names(self) -> list[str]:
        return sorted(set(self.speakers))


def load_digit_recordings(folder: str | Path, *, sample_rate: int = 8000) -> DigitRecordings:
    """Read every ``<digit>_<speaker>_<index>.wav`` in ``folder`` (other files are ignored),
    resampled to ``sample_rate``."""
    check_positive("sample_rate", sample_rate)
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ReslearnError(f"digit recordings folder {folder} does not exist")
    found = [(m, p) for p in sorted(folder.iterdir()) if (m := _NAME.match(p.name))]
    if not found:
        raise ReslearnError(
            f"no digit recordings named <digit>_<speaker>_<index>.wav in {folder}"
        )
    waves, digits, speakers, names = [], [], [], []
    for match, path in found:
        wave = read_wav(path, sample_rate=sample_rate)
        if len(wave) == 0:
            raise ReslearnError(f"empty recording {path}")
        waves.append(torch.from_numpy(wave))
        digits.append(int(match.group(1)))
        speakers.append(match.group(2))
        names.append(path.name)
    return DigitRecordings(waves, digits, speakers, names, sample_rate)


def split_speakers(
    speakers: Sequence[str],
    *,
    test_speakers: Sequence[str] | None = None,
    num_test: int = 1,
    val_speakers: Sequence[str] = (),
    seed: int = 0,
) -> dict[str, tuple[str, ...]]:
    """Disjoint speaker sets {"train", "val", "test"}: ``test_speakers`` as given, or ``num_test``
    drawn from ``seed``; ``val_speakers`` as given; the rest train."""
    pool = sorted(set(speakers))
    unknown = [s for s in [*(test_speakers or ()), *val_speakers] if s not in pool]
    if unknown:
        raise ReslearnError(f"unknown speaker(s) {', '.join(unknown)}; speakers: {', '.join(pool)}")
    if test_speakers is None:
        check_positive("num_test", num_test)
        rest = [s for s in pool if s not in val_speakers]
        if num_test >= len(rest):
            raise ValueError(f"num_test must leave training speakers; {len(rest)} available")
        rng = np.random.default_rng(seed)
        test_speakers = sorted(rng.choice(rest, size=num_test, replace=False).tolist())
    test, val = tuple(sorted(test_speakers)), tuple(sorted(val_speakers))
    if set(test) & set(val):
        raise ValueError(f"test_speakers and val_speakers overlap: {sorted(set(test) & set(val))}")
    train = tuple(s for s in pool if s not in test and s not in val)
    if not train or not test:
        raise ValueError("the split needs at least one training and one test speaker")
    return {"train": train, "val": val, "test": test}


@dataclass
class DigitStrings:
    """Digit strings over ``recordings``: ``items[i] = (clip ids, pauses in samples)`` with one
    more pause than clips (before, between, after)."""

    recordings: DigitRecordings
    items: list[tuple[tuple[int, ...], tuple[int, ...]]]
    speakers: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.items)

    def digits(self, i: int) -> list[int]:
        return [self.recordings.digits[c] for c in self.items[i][0]]

    def words(self, i: int) -> list[str]:
        return [DIGIT_WORDS[d] for d in self.digits(i)]

    def num_samples(self, i: int) -> int:
        clips, pauses = self.items[i]
        return sum(len(self.recordings.waves[c]) for c in clips) + sum(pauses)

    def waveform(self, i: int) -> torch.Tensor:
        clips, pauses = self.items[i]
        parts = [torch.zeros(pauses[0])]
        for c, p in zip(clips, pauses[1:]):
            parts += [self.recordings.waves[c], torch.zeros(p)]
        return torch.cat(parts)


def build_digit_strings(
    recordings: DigitRecordings,
    *,
    speakers: Sequence[str],
    count: int,
    min_digits: int = 1,
    max_digits: int = 7,
    pause_range: tuple[float, float] = (0.05, 0.3),
    seed: int = 0,
) -> DigitStrings:
    """``count`` strings of ``min_digits``..``max_digits`` clips (uniform), each of one speaker
    (uniform over ``speakers``) with clips drawn uniformly from that speaker's recordings, joined
    with pauses uniform in ``pause_range`` seconds."""
    check_positive("count", count)
    check_positive("min_digits", min_digits)
    if max_digits < min_digits:
        raise ValueError(f"max_digits ({max_digits}) must be >= min_digits ({min_digits})")
    lo, hi = pause_range
    if not 0 <= lo <= hi:
        raise ValueError(f"pause_range must be (low, high) with 0 <= low <= high; got {pause_range!r}")
    by_speaker = {s: [i for i, sp in enumerate(recordings.speakers) if sp == s] for s in speakers}
    empty = [s for s, ids in by_speaker.items() if not ids]
    if not speakers or empty:
        raise ReslearnError(f"no recordings for speaker(s) {', '.join(empty) or '(none given)'}")
    rng = np.random.default_rng(seed)
    names = sorted(by_speaker)
    sr = recordings.sample_rate
    items = []
    for _ in range(count):
        ids = by_speaker[names[rng.integers(len(names))]]
        n = int(rng.integers(min_digits, max_digits + 1))
        clips = tuple(int(ids[j]) for j in rng.integers(len(ids), size=n))
        pauses = tuple(int(round(sr * p)) for p in rng.uniform(lo, hi, size=n + 1))
        items.append((clips, pauses))
    return DigitStrings(recordings, items, tuple(names))


class DigitSource:
    """BatchSource of ((log-mel (B, 1, n_mels, T), frame lengths (B,)), (targets (B, S),
    target lengths (B,))) over ``strings``; sharded and resumable like the other sources."""

    def __init__(
        self,
        strings: DigitStrings,
        *,
        batch_size: int,
        features: nn.Module | None = None,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        accum_steps: int = 1,
    ) -> None:
        self.strings = strings
        self.batches = ShardedOrder(
            len(strings),
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            seed=seed,
            rank=rank,
            world_size=world_size,
            accum_steps=accum_steps,
        )
        self.device = torch.device(device)
        sr = strings.recordings.sample_rate
        self.features = (features or LogMel(sample_rate=sr)).to(self.device)

    def __len__(self) -> int:
        return len(self.batches)

    def batch(self, indices: Sequence[int]):
        """The padded batch of the strings ``indices``."""
        waves = [self.strings.waveform(int(i)) for i in indices]
        lengths = torch.tensor([len(w) for w in waves])
        padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True).to(self.device)
        with torch.no_grad():
            feats, frames = self.features(padded, lengths.to(self.device))
        labels = [torch.tensor(self.strings.digits(int(i))) + 1 for i in indices]
        target_lengths = torch.tensor([len(t) for t in labels], device=self.device)
        targets = torch.nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=BLANK)
        return (feats, frames), (targets.to(self.device), target_lengths)

    def iter_epoch(self, epoch: int, start: int = 0) -> Iterator[tuple]:
        for _, _, idx in self.batches.shards(epoch, start):
            yield self.batch(idx.tolist())


def digit_sources(
    folder: str | Path,
    *,
    batch_size: int,
    train_strings: int = 2000,
    test_strings: int = 300,
    test_speakers: Sequence[str] | None = None,
    num_test: int = 1,
    val_speakers: Sequence[str] = (),
    min_digits: int = 1,
    max_digits: int = 7,
    n_mels: int = 80,
    frame_ms: float = 10.0,
    eval_batch_size: int | None = None,
    seed: int = 0,
    split_seed: int | None = None,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    accum_steps: int = 1,
) -> dict[str, DigitSource]:
    """Speaker-disjoint "train" (shuffled), "test" and, with ``val_speakers``, "val" sources of
    digit strings built from the recordings in ``folder`` (val gets ``test_strings`` too).
    ``split_seed`` (default ``seed``) draws the test speakers (``num_test`` of them unless
    ``test_speakers`` names them) and the strings; ``seed`` the training order. Features:
    ``log_mel_frames(n_mels, frame_ms)`` at the recordings' rate."""
    split_seed = seed if split_seed is None else split_seed
    recordings = load_digit_recordings(folder)
    features = log_mel_frames(recordings.sample_rate, n_mels=n_mels, frame_ms=frame_ms)
    speakers = split_speakers(
        recordings.speakers, test_speakers=test_speakers, num_test=num_test,
        val_speakers=val_speakers, seed=split_seed,
    )
    out = {}
    for i, (split, names) in enumerate(speakers.items()):
        if not names:
            continue
        train = split == "train"
        strings = build_digit_strings(
            recordings,
            speakers=names,
            count=train_strings if train else test_strings,
            min_digits=min_digits,
            max_digits=max_digits,
            seed=split_seed * 1_000_003 + i,  # each split draws its own strings
        )
        out[split] = DigitSource(
            strings,
            batch_size=batch_size if train else (eval_batch_size or batch_size),
            features=features,
            shuffle=train,
            drop_last=train and len(strings) >= batch_size,
            seed=seed,
            device=device,
            **sharding_for(train, rank=rank, world_size=world_size, accum_steps=accum_steps),
        )
    return out


def log_mel_frames(sample_rate: int, *, n_mels: int = 80, frame_ms: float = 10.0) -> LogMel:
    """``LogMel`` with a frame shift of ``frame_ms`` (10 ms: the usual rate; 30 ms: the "lower
    frame rate" of Pundak & Sainath, Interspeech 2016, a third of the frames for the BLSTMs and
    CTC) and a window of 25 ms or the shift, whichever is longer (no sample is skipped)."""
    if not frame_ms > 0:
        raise ValueError(f"frame_ms must be > 0; got {frame_ms!r}")
    hop = max(1, round(sample_rate * frame_ms / 1000))
    win = max(round(sample_rate * 0.025), hop)
    return LogMel(sample_rate=sample_rate, n_mels=n_mels, hop_length=hop, win_length=win,
                  n_fft=max(512, 1 << (win - 1).bit_length()))


def find_digit_folder(root: str | Path = "") -> Path:
    """The recordings folder: ``root`` (or its ``recordings/``), else ``fsdd/recordings`` under
    the first default data root that has it."""
    if root:
        root = Path(root).expanduser()
        return root / "recordings" if (root / "recordings").is_dir() else root
    from ..data.bundle import default_data_roots

    roots = default_data_roots()
    for folder in (r / "fsdd" / "recordings" for r in roots):
        if folder.is_dir():
            return folder
    raise ReslearnError(
        f"no digit recordings (fsdd/recordings) in {', '.join(map(str, roots))}; set data.root=DIR "
        f"(a folder of <digit>_<speaker>_<index>.wav, e.g. the Free Spoken Digit Dataset's recordings/)"
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
    train_strings: int = 2000,
    test_strings: int = 300,
    test_speakers: Sequence[str] | None = None,
    num_test: int = 1,
    val_speakers: Sequence[str] = (),
    min_digits: int = 1,
    max_digits: int = 7,
    n_mels: int = 80,
    frame_ms: float = 10.0,
    ctc_normalize: str = "target",
):
    """The engine's ``DataBundle`` for ``data.name: digit-strings`` (``engine.data.APP_DATA``):
    ``digit_sources`` over ``find_digit_folder(data.root)``, strings and test speakers drawn from
    ``data.split_seed``, evaluated by ``CTCTask`` (word error rate). A model for ``n_mels`` other
    than 80 needs ``model.kwargs.n_bins`` to match; ``frame_ms`` is the frame shift
    (``log_mel_frames``); ``ctc_normalize`` is ``CTCTask(normalize=)``."""
    from ..data.bundle import DataBundle, eval_batch_size
    from .ctc import CTCTask

    folder = find_digit_folder(cfg.root)
    srcs = digit_sources(
        folder, batch_size=batch_size, train_strings=train_strings, test_strings=test_strings,
        test_speakers=test_speakers, num_test=num_test, val_speakers=tuple(val_speakers),
        min_digits=min_digits, max_digits=max_digits, n_mels=n_mels, frame_ms=frame_ms,
        eval_batch_size=eval_batch_size(cfg, batch_size), seed=seed,
        split_seed=cfg.split_seed, device=device, rank=rank, world_size=world_size,
        accum_steps=accum_steps,
    )
    train = srcs.pop("train")
    classes = list(digit_vocabulary())
    return DataBundle(
        train=train,
        evals=srcs,
        num_classes=len(classes),
        in_chans=1,
        image_size=(train.features.n_mels, 0),  # 0: frames vary with the string
        classes=classes,
        train_size=len(train.strings),
        info={"name": "digit-strings", "root": str(folder),
              **{f"{k}_speakers": list(s.strings.speakers) for k, s in [("train", train), *srcs.items()]},
              **{k: len(s.strings) for k, s in [("train", train), *srcs.items()]}},
        task=CTCTask(normalize=ctc_normalize),
    )
