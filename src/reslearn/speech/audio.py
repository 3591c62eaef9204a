"""Reading WAV files into float32 arrays (soundfile), resampled where the file's rate differs
(librosa), and fitting them to a fixed length."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ReslearnError

__all__ = ["read_wav", "fit_length"]


def read_wav(path: str | Path, *, sample_rate: int) -> np.ndarray:
    """Mono float32 samples in [-1, 1] at ``sample_rate`` (multi-channel files are averaged)."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as e:  # soundfile raises LibsndfileError(RuntimeError)
        raise ReslearnError(f"cannot read audio file {path}: {e}") from None
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if rate != sample_rate:
        import librosa

        wave = librosa.resample(wave, orig_sr=rate, target_sr=sample_rate)
    return np.ascontiguousarray(wave, dtype=np.float32)


def fit_length(wave: np.ndarray, length: int) -> np.ndarray:
    """Zero-pad at the end or trim to exactly ``length`` samples (Speech Commands clips last at
    most one second; Warden, arXiv:1804.03209)."""
    if len(wave) >= length:
        return wave[:length]
    return np.pad(wave, (0, length - len(wave)))
