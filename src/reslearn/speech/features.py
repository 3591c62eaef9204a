"""Batched speech front ends: MFCC as Tang & Lin (2018) and honk compute it, and log-mel filter
banks for the connected-digit task.

Tang & Lin, "Deep Residual Learning for Small-Footprint Keyword Spotting", ICASSP 2018
(arXiv:1710.10361), feed their networks 40-dimensional MFCC frames from a 30 ms window with a
10 ms shift, band-passed to 20 Hz - 4 kHz. Their reference implementation (castorini/honk)
builds it as: power mel spectrogram (librosa, n_fft = window =
480, hop 160, 40 Slaney mel bands, 20-4000 Hz), natural log of the positive entries (exact zeros
stay zero), then an orthonormal DCT-II keeping all 40 coefficients. One second at 16 kHz gives
1 + 16000 / 160 = 101 frames (centred frames), hence the (101, 40) input of the res models.

The short-time Fourier transform runs in torch on whole batches (on the training device); the
mel filter bank comes from librosa and the DCT matrix from scipy, so the numbers are librosa's
(tests compare against ``librosa.feature.melspectrogram`` / ``librosa.feature.mfcc``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ..models.base import check_positive

__all__ = ["MelFrontEnd", "MFCC", "LogMel", "frame_count", "compute_in_chunks"]


def frame_count(num_samples: int | torch.Tensor, hop_length: int) -> int | torch.Tensor:
    """Frames of a centred STFT (librosa's and ``torch.stft(center=True)``'s convention)."""
    return 1 + num_samples // hop_length


class MelFrontEnd(nn.Module):
    """Power mel spectrogram of a batch of waveforms: torch STFT (Hann window, centred frames,
    zero padding as librosa >= 0.10) and librosa's mel filter bank (Slaney scale and area
    normalisation, librosa's defaults)."""

    def __init__(
        self,
        *,
        sample_rate: int,
        n_fft: int,
        win_length: int,
        hop_length: int,
        n_mels: int,
        fmin: float,
        fmax: float | None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("sample_rate", sample_rate),
            ("n_fft", n_fft),
            ("win_length", win_length),
            ("hop_length", hop_length),
            ("n_mels", n_mels),
        ):
            check_positive(name, value)
        if win_length > n_fft:
            raise ValueError(f"win_length ({win_length}) must not exceed n_fft ({n_fft})")
        fmax = sample_rate / 2 if fmax is None else fmax
        if not 0 <= fmin < fmax <= sample_rate / 2:
            raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2; got fmin={fmin}, fmax={fmax}")
        import librosa

        fb = librosa.filters.mel(
            sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax
        )
        self.sample_rate, self.n_fft, self.win_length = sample_rate, n_fft, win_length
        self.hop_length, self.n_mels, self.fmin, self.fmax = hop_length, n_mels, fmin, fmax
        # Periodic Hann, as scipy.signal.get_window("hann", n, fftbins=True) that librosa uses.
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        self.register_buffer("mel_fb", torch.from_numpy(fb), persistent=False)

    def power_mel(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, samples) float -> (B, n_mels, frames) mel power."""
        if waves.dim() == 1:
            waves = waves.unsqueeze(0)
        if waves.dim() != 2:
            raise ValueError(f"waves must be (batch, samples); got shape {tuple(waves.shape)}")
        spec = torch.stft(
            waves.float(),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()
        return torch.matmul(self.mel_fb, power)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, win_length={self.win_length}, "
            f"hop_length={self.hop_length}, n_mels={self.n_mels}, fmin={self.fmin}, fmax={self.fmax}"
        )


class MFCC(MelFrontEnd):
    """MFCC of Tang & Lin (2018) / honk: (B, samples) -> (B, 1, frames, n_mfcc) float32.

    The layout (time, coefficient) is the (101, 40) "image" the res models take.
    """

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        n_fft: int = 480,
        win_length: int | None = None,
        hop_length: int = 160,
        n_mels: int = 40,
        n_mfcc: int = 40,
        fmin: float = 20.0,
        fmax: float | None = 4000.0,
    ) -> None:
        super().__init__(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length or n_fft,
            hop_length=hop_length,
            n_mels=n_mels,
            fmin=fmin,
            fmax=fmax,
        )
        check_positive("n_mfcc", n_mfcc)
        if n_mfcc > n_mels:
            raise ValueError(f"n_mfcc ({n_mfcc}) must not exceed n_mels ({n_mels})")
        from scipy.fft import dct

        # Row k of the orthonormal DCT-II matrix: the k-th cepstral coefficient (honk used
        # librosa.filters.dct, the same orthonormal basis; librosa.feature.mfcc uses scipy's).
        basis = dct(np.eye(n_mels), type=2, norm="ortho", axis=0)[:n_mfcc]
        self.n_mfcc = n_mfcc
        self.register_buffer("dct", torch.from_numpy(basis.astype(np.float32)), persistent=False)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        mel = self.power_mel(waves)
        # honk takes the log of the positive entries only: exact zeros (digital silence) stay 0
        # instead of -inf.
        logmel = torch.where(mel > 0, mel.clamp_min(torch.finfo(mel.dtype).tiny).log(), mel)
        mfcc = torch.matmul(self.dct, logmel)  # (B, n_mfcc, frames)
        return mfcc.transpose(1, 2).unsqueeze(1).contiguous()


class LogMel(MelFrontEnd):
    """Log-mel filter banks (B, samples) -> (B, 1, n_mels, frames), frequency as height and time
    as width, the layout of the WRBN (Heymann et al. 2016: 80 log-mel bins).

    Defaults suit 8 kHz speech (FSDD): 25 ms Hann window (200) zero-padded to a 512-point FFT so
    that none of the 80 narrow low-frequency mel filters is empty, 10 ms hop (80). With
    ``lengths`` (valid samples per row), each row is normalised to zero mean and unit variance
    per bin over its own valid frames and padded frames are set to 0.
    """

    def __init__(
        self,
        *,
        sample_rate: int = 8000,
        n_fft: int = 512,
        win_length: int = 200,
        hop_length: int = 80,
        n_mels: int = 80,
        fmin: float = 0.0,
        fmax: float | None = None,
        eps: float = 1e-6,
        normalize: bool = True,
    ) -> None:
        super().__init__(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            n_mels=n_mels,
            fmin=fmin,
            fmax=fmax,
        )
        if eps <= 0:
            raise ValueError(f"eps must be > 0; got {eps!r}")
        self.eps, self.normalize = eps, normalize

    def forward(
        self, waves: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (features (B, 1, n_mels, frames), frame lengths (B,) int64)."""
        feats = (self.power_mel(waves) + self.eps).log()
        frames = feats.shape[-1]
        if lengths is None:
            lens = torch.full((feats.shape[0],), frames, dtype=torch.long, device=feats.device)
        else:
            lens = frame_count(lengths.to(feats.device, torch.long), self.hop_length).clamp_max(frames)
        mask = (torch.arange(frames, device=feats.device) < lens[:, None]).unsqueeze(1)
        if self.normalize:
            n = lens.clamp_min(1)[:, None, None].to(feats.dtype)
            mean = (feats * mask).sum(-1, keepdim=True) / n
            var = ((feats - mean).square() * mask).sum(-1, keepdim=True) / n
            feats = (feats - mean) / (var + 1e-5).sqrt()
        feats = feats * mask
        return feats.unsqueeze(1), lens


def compute_in_chunks(
    fn: nn.Module, waves: torch.Tensor, *, chunk: int = 512
) -> torch.Tensor:
    """``fn`` over a large batch of fixed-length waveforms in chunks (bounded memory), e.g. to
    cache the MFCC of a whole evaluation split once."""
    check_positive("chunk", chunk)
    with torch.no_grad():
        return torch.cat([fn(waves[i : i + chunk]) for i in range(0, len(waves), chunk)])
