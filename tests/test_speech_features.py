"""Batched MFCC (honk's recipe) and log-mel front ends against librosa computed directly."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, require_data, require_module

librosa = require_module("librosa")
sf = require_module("soundfile")

from reslearn.speech.features import MFCC, LogMel, frame_count  # noqa: E402

DATA = Path(os.environ.get("RESLEARN_DATA_DIR", ROOT / ".data"))


def _librosa_mfcc(y: np.ndarray) -> np.ndarray:
    mel = librosa.feature.melspectrogram(
        y=y, sr=16000, n_fft=480, hop_length=160, n_mels=40, fmin=20, fmax=4000
    )
    return librosa.feature.mfcc(S=np.log(mel), n_mfcc=40).T  # (frames, 40)


def _synthetic(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(16000) / 16000
    tones = [np.sin(2 * np.pi * f * t) * a for f, a in zip(rng.uniform(100, 3500, n), rng.uniform(0.1, 0.5, n))]
    return (np.stack(tones) + 0.01 * rng.standard_normal((n, 16000))).astype(np.float32)


def test_mfcc_matches_librosa_on_a_batch():
    waves = _synthetic(3, seed=1)
    out = MFCC()(torch.from_numpy(waves))
    assert out.shape == (3, 1, 101, 40) and out.dtype == torch.float32
    for i in range(3):
        ref = _librosa_mfcc(waves[i])
        np.testing.assert_allclose(out[i, 0].numpy(), ref, atol=2e-3, rtol=1e-4)


def test_mfcc_matches_librosa_on_real_speech():
    root = require_data(DATA / "asc-speech-commands", "Arabic Speech Commands")
    files = sorted((root / "yes").glob("*.wav"))[:2] + sorted((root / "stop").glob("*.wav"))[:2]
    waves = np.stack([sf.read(f, dtype="float32")[0] for f in files])
    out = MFCC()(torch.from_numpy(waves))
    for i, y in enumerate(waves):
        np.testing.assert_allclose(out[i, 0].numpy(), _librosa_mfcc(y), atol=2e-3, rtol=1e-4)


def test_mfcc_leaves_digital_silence_at_zero():
    # honk logs only the positive mel energies: an all-zero clip gives all-zero MFCC, not -inf
    out = MFCC()(torch.zeros(2, 16000))
    assert torch.equal(out, torch.zeros(2, 1, 101, 40))


def test_logmel_values_lengths_and_normalisation():
    rng = np.random.default_rng(0)
    a = (0.3 * rng.standard_normal(8000)).astype(np.float32)
    b = (0.3 * rng.standard_normal(5000)).astype(np.float32)
    raw = LogMel(normalize=False)
    feats, lens = raw(torch.from_numpy(a)[None])
    mel = librosa.feature.melspectrogram(
        y=a, sr=8000, n_fft=512, win_length=200, hop_length=80, n_mels=80
    )
    np.testing.assert_allclose(feats[0, 0].numpy(), np.log(mel + 1e-6), atol=2e-3, rtol=1e-4)
    assert feats.shape == (1, 1, 80, 101) and lens.tolist() == [101]

    padded = torch.zeros(2, 8000)
    padded[0], padded[1, :5000] = torch.from_numpy(a), torch.from_numpy(b)
    feats, lens = LogMel()(padded, torch.tensor([8000, 5000]))
    assert lens.tolist() == [frame_count(8000, 80), frame_count(5000, 80)] == [101, 63]
    valid = feats[1, 0, :, :63]
    assert torch.allclose(valid.mean(-1), torch.zeros(80), atol=1e-4)
    assert torch.allclose(valid.std(-1, unbiased=False), torch.ones(80), atol=1e-2)
    assert torch.all(feats[1, 0, :, 63:] == 0)


def test_front_end_arguments_are_checked():
    with pytest.raises(ValueError, match="n_mfcc"):
        MFCC(n_mfcc=41)
    with pytest.raises(ValueError, match="win_length"):
        LogMel(win_length=600, n_fft=512)
    with pytest.raises(ValueError, match="fmax"):
        MFCC(fmax=9000)
